/* Echo server over memif in C, compatible with examples/echo_client.rs (and echo_client.c):
 *
 *   echo_server SOCKET_PATH [--once]
 *
 * Serves the memif control socket and accepts bypass connections on 10.77.0.1:7200; every
 * message that arrives is sent back unchanged. It is received in place (bypass_socket_recv_msg:
 * its bytes stay in the stack's buffers) and copied once into packet buffers lent for the
 * answer (bypass_socket_sendbuf). With --once it exits after its first client closes. */
#include <string.h>

#include "util.h"

#define PROG "echo_server"

static const uint8_t SERVER_MAC[6] = {0x02, 0x77, 0, 0, 0, 1};
static const uint8_t CLIENT_MAC[6] = {0x02, 0x77, 0, 0, 0, 2};

static void usage(void) {
  fprintf(stderr, "usage: echo_server SOCKET_PATH [--once]\n");
  exit(2);
}

/* Echoes one message; returns its length, or -code on the connection's end or an error. */
static long echo_one(bypass_socket s, bypass_result *end) {
  bypass_msg m;
  bypass_result rc = bypass_socket_recv_msg(s, &m);
  if (rc != BYPASS_OK) {
    *end = rc;
    return -1;
  }
  uint64_t len = 0;
  size_t nseg = 0;
  CHECK(bypass_msg_info(m, &len, &nseg));
  bypass_segment segs[64];
  if (nseg > 64) {
    fprintf(stderr, PROG ": a message of %zu segments\n", nseg);
    exit(1);
  }
  CHECK(bypass_msg_segments(m, segs, 64, &nseg));
  bypass_sendbuf b;
  rc = bypass_socket_sendbuf(s, (size_t)len, &b);
  if (rc == BYPASS_OK) {
    size_t at = 0;
    for (size_t k = 0; k < nseg && rc == BYPASS_OK; k++) {
      rc = bypass_sendbuf_write(b, at, segs[k].ptr, segs[k].len);
      at += segs[k].len;
    }
    if (rc == BYPASS_OK)
      rc = bypass_sendbuf_send(b, NULL);
    else
      bypass_sendbuf_discard(b);
  }
  CHECK(bypass_msg_release(m));
  if (rc != BYPASS_OK) {
    *end = rc;
    return -1;
  }
  return (long)len;
}

int main(int argc, char **argv) {
  const char *path = NULL;
  int once = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--once") == 0)
      once = 1;
    else if (!path)
      path = argv[i];
    else
      usage();
  }
  if (!path) usage();

  bypass_config cfg;
  CHECK(bypass_config_new(&cfg));
  CHECK(bypass_config_set_memif(cfg, path, BYPASS_MEMIF_SERVER, 0));
  CHECK(bypass_config_set_ip(cfg, "10.77.0.1"));
  CHECK(bypass_config_set_mac(cfg, SERVER_MAC));
  CHECK(bypass_config_add_static_arp(cfg, "10.77.0.2", CLIENT_MAC));
  /* Wait as long as it takes for the first client's memif link. */
  CHECK(bypass_config_set_link_timeout_ms(cfg, 24ull * 3600 * 1000));
  bypass_stack stack;
  CHECK(bypass_stack_new(cfg, &stack));
  CHECK(bypass_config_free(cfg));
  printf("echo_server: listening on 10.77.0.1:7200 over memif %s\n", path);
  fflush(stdout);

  bypass_listener listener;
  CHECK(bypass_stack_listen(stack, &listener));
  int status = 0;
  for (;;) {
    bypass_socket s;
    bypass_result rc = bypass_listener_accept(listener, 3600 * 1000, &s);
    if (rc == BYPASS_ERR_TIMED_OUT) continue;
    if (rc != BYPASS_OK) die(PROG, "bypass_listener_accept", rc);
    /* An idle client is fine: wait for messages without a deadline. */
    CHECK(bypass_socket_set_timeout_ms(s, -1));
    char peer[64];
    CHECK(bypass_socket_peer(s, peer, sizeof peer, NULL));
    uint64_t msgs = 0, bytes = 0;
    bypass_result end = BYPASS_OK;
    for (;;) {
      long n = echo_one(s, &end);
      if (n < 0) break;
      msgs++;
      bytes += (uint64_t)n;
    }
    if (end == BYPASS_ERR_CLOSED) {
      printf("echo_server: %s closed after %llu messages (%llu bytes) echoed\n", peer,
             (unsigned long long)msgs, (unsigned long long)bytes);
    } else {
      char msg[512];
      bypass_last_error(msg, sizeof msg);
      printf("echo_server: %s gone after %llu messages: %s\n", peer, (unsigned long long)msgs,
             msg);
      status = 1;
    }
    fflush(stdout);
    CHECK(bypass_socket_abort(s));
    if (once) break;
  }
  CHECK(bypass_listener_free(listener));
  CHECK(bypass_stack_free(stack));
  return once ? status : 0;
}
