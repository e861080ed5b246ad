#define _GNU_SOURCE
#include "CDevDBShims.h"
#include <malloc.h>
#include <string.h>
#include <sys/socket.h>

int devdb_accept4_nonblock(int fd, struct sockaddr *addr, socklen_t *len) {
    return accept4(fd, addr, len, SOCK_NONBLOCK | SOCK_CLOEXEC);
}

int devdb_socket_nonblock(int domain, int type, int protocol) {
    return socket(domain, type | SOCK_NONBLOCK | SOCK_CLOEXEC, protocol);
}

long devdb_ssl_ctx_set_min_tls12(SSL_CTX *ctx) {
    return SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
}

long devdb_ssl_ctx_set_partial_write_modes(SSL_CTX *ctx) {
    return SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
}

long devdb_bio_set_mem_eof_return(BIO *bio, long v) { return BIO_set_mem_eof_return(bio, v); }


unsigned long devdb_ssl_op_no_renegotiation(void) { return SSL_OP_NO_RENEGOTIATION; }
unsigned long devdb_ssl_op_no_compression(void) { return SSL_OP_NO_COMPRESSION; }
unsigned long devdb_ssl_op_server_preference(void) { return SSL_OP_CIPHER_SERVER_PREFERENCE; }

int devdb_malloc_trim(void) { return malloc_trim(0); }

static const unsigned char pg_alpn[] = {10, 'p', 'o', 's', 't', 'g', 'r', 'e', 's', 'q', 'l'};

// As PostgreSQL 17 does: a client that offers ALPN must offer "postgresql".
static int devdb_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                             const unsigned char *in, unsigned int inlen, void *arg) {
    (void)ssl; (void)arg;
    unsigned char *sel = NULL;
    if (SSL_select_next_proto(&sel, outlen, pg_alpn, sizeof(pg_alpn), in, inlen) == OPENSSL_NPN_NEGOTIATED) {
        *out = sel;
        return SSL_TLSEXT_ERR_OK;
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

void devdb_ssl_ctx_use_postgresql_alpn(SSL_CTX *ctx) {
    SSL_CTX_set_alpn_select_cb(ctx, devdb_alpn_select, NULL);
}



#include <sys/epoll.h>
#include <sys/eventfd.h>

int devdb_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int devdb_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t token) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = events;
    ev.data.u64 = token;
    return epoll_ctl(epfd, op, fd, &ev);
}

int devdb_epoll_wait(int epfd, struct devdb_event *out, int max, int timeout_ms) {
    struct epoll_event evs[256];
    if (max > 256) max = 256;
    int n = epoll_wait(epfd, evs, max, timeout_ms);
    for (int i = 0; i < n; i++) {
        out[i].events = evs[i].events;
        out[i].token = evs[i].data.u64;
    }
    return n;
}

int devdb_eventfd(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

#include <sched.h>
// CPUs this process may run on (its affinity mask), or -1.
int devdb_affinity_cpu_count(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) return -1;
    return CPU_COUNT(&set);
}
