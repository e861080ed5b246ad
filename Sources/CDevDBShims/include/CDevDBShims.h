// Small C shims for what Swift cannot import directly: OpenSSL function-like macros and
// GNU-only socket calls. Every symbol carries the devdb_ prefix.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <openssl/ssl.h>

int devdb_accept4_nonblock(int fd, struct sockaddr *addr, socklen_t *len);
int devdb_socket_nonblock(int domain, int type, int protocol);

long devdb_ssl_ctx_set_min_tls12(SSL_CTX *ctx);
long devdb_ssl_ctx_set_partial_write_modes(SSL_CTX *ctx);
long devdb_bio_set_mem_eof_return(BIO *bio, long v);
unsigned long devdb_ssl_op_no_renegotiation(void);
unsigned long devdb_ssl_op_no_compression(void);
unsigned long devdb_ssl_op_server_preference(void);
/// Gives free heap pages of every malloc arena back to the system.
int devdb_malloc_trim(void);
/// CPUs in this process's affinity mask (what taskset or a cpuset allows), or -1.
int devdb_affinity_cpu_count(void);
/// Sets the ALPN select callback that chooses "postgresql" or fails the handshake.
void devdb_ssl_ctx_use_postgresql_alpn(SSL_CTX *ctx);


/// epoll without the packed `struct epoll_event` (which Swift imports poorly): interest changes
/// take the event mask and a 64-bit token; waits fill plain structs.
struct devdb_event { uint32_t events; uint64_t token; };
int devdb_epoll_create(void);
int devdb_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t token);
int devdb_epoll_wait(int epfd, struct devdb_event *out, int max, int timeout_ms);
int devdb_eventfd(void);
