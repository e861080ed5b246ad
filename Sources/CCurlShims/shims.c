#define _GNU_SOURCE
#include "CCurlShims.h"

#include <sys/ioctl.h>
#include <linux/fs.h>

CURLcode devdb_curl_set_string(CURL *h, CURLoption opt, const char *value) { return curl_easy_setopt(h, opt, value); }
CURLcode devdb_curl_set_long(CURL *h, CURLoption opt, long value) { return curl_easy_setopt(h, opt, value); }
CURLcode devdb_curl_set_pointer(CURL *h, CURLoption opt, void *value) { return curl_easy_setopt(h, opt, value); }
CURLcode devdb_curl_set_write_function(CURL *h, size_t (*fn)(char *, size_t, size_t, void *)) {
    return curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, fn);
}
CURLcode devdb_curl_set_xferinfo_function(CURL *h, int (*fn)(void *, curl_off_t, curl_off_t, curl_off_t, curl_off_t)) {
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    return curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, fn);
}
CURLcode devdb_curl_get_response_code(CURL *h, long *code) { return curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, code); }
CURLcode devdb_curl_global_init(void) { return curl_global_init(CURL_GLOBAL_DEFAULT); }
int devdb_ficlone(int dst_fd, int src_fd) { return ioctl(dst_fd, FICLONE, src_fd); }

int devdb_spawn_close_from(posix_spawn_file_actions_t *actions, int lowfd) {
    return posix_spawn_file_actions_addclosefrom_np(actions, lowfd);
}

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

static int private_v4(uint32_t a) {
    uint8_t b0 = a >> 24, b1 = (a >> 16) & 0xff;
    return b0 == 0 || b0 == 10 || b0 == 127 || (b0 == 100 && (b1 & 0xc0) == 64) || (b0 == 169 && b1 == 254) ||
           (b0 == 172 && (b1 & 0xf0) == 16) || (b0 == 192 && b1 == 168) || (b0 == 192 && b1 == 0 && ((a >> 8) & 0xff) == 0) ||
           (b0 == 198 && (b1 & 0xfe) == 18) || b0 >= 224;
}

int devdb_is_private_address(const struct sockaddr *sa) {
    if (sa->sa_family == AF_INET) {
        return private_v4(ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr));
    }
    if (sa->sa_family == AF_INET6) {
        const uint8_t *b = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        static const uint8_t zero[15] = {0};
        if (memcmp(b, mapped, 12) == 0) return private_v4(((uint32_t)b[12] << 24) | (b[13] << 16) | (b[14] << 8) | b[15]);
        if (memcmp(b, zero, 15) == 0) return 1;              /* :: and ::1 */
        if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) return 1;   /* link-local fe80::/10 */
        if ((b[0] & 0xfe) == 0xfc) return 1;                  /* unique local fc00::/7 */
        if (b[0] == 0xff) return 1;                           /* multicast */
        return 0;
    }
    return 1;
}

static curl_socket_t open_public_only(void *clientp, curlsocktype purpose, struct curl_sockaddr *address) {
    (void)clientp; (void)purpose;
    if (devdb_is_private_address(&address->addr)) return CURL_SOCKET_BAD;
    return socket(address->family, address->socktype, address->protocol);
}

CURLcode devdb_curl_public_addresses_only(CURL *h) {
    return curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, open_public_only);
}

CURLcode devdb_curl_set_header_function(CURL *h, size_t (*fn)(char *, size_t, size_t, void *)) {
    return curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, fn);
}
