// Typed wrappers for libcurl's variadic calls and the FICLONE ioctl (control plane only).
#pragma once

#include <curl/curl.h>
/// Typed wrappers for curl_easy_setopt / getinfo (variadic in C).
CURLcode devdb_curl_set_string(CURL *h, CURLoption opt, const char *value);
CURLcode devdb_curl_set_long(CURL *h, CURLoption opt, long value);
CURLcode devdb_curl_set_pointer(CURL *h, CURLoption opt, void *value);
CURLcode devdb_curl_set_write_function(CURL *h, size_t (*fn)(char *, size_t, size_t, void *));
CURLcode devdb_curl_set_xferinfo_function(CURL *h, int (*fn)(void *, curl_off_t, curl_off_t, curl_off_t, curl_off_t));
CURLcode devdb_curl_get_response_code(CURL *h, long *code);
CURLcode devdb_curl_global_init(void);
/// FICLONE: share all of src's blocks with dst (reflink). 0 or -1 with errno.
int devdb_ficlone(int dst_fd, int src_fd);

#include <spawn.h>
/// Children must not inherit the API's sockets (a postmaster would hold the API's port).
int devdb_spawn_close_from(posix_spawn_file_actions_t *actions, int lowfd);

#include <sys/socket.h>
/// 1 when the address is loopback, private, link-local (cloud metadata), CGNAT, unspecified or multicast.
int devdb_is_private_address(const struct sockaddr *sa);
/// Makes libcurl refuse to connect to such addresses (redirects and DNS answers included).
CURLcode devdb_curl_public_addresses_only(CURL *h);
/// CURLOPT_HEADERFUNCTION (variadic setopt); the data pointer goes with CURLOPT_HEADERDATA.
CURLcode devdb_curl_set_header_function(CURL *h, size_t (*fn)(char *, size_t, size_t, void *));
