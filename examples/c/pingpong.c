/* Round trips of one small message between two C processes over memif: the C API's cost
 * next to the Rust API's (`bypass bench pingpong --sizes 64 --transports bypass-memif
 * --variants busy-poll` makes the same exchange from Rust).
 *
 *   pingpong server SOCKET_PATH [--core N] [--copy]
 *   pingpong client SOCKET_PATH [--core N] [--size B] [--warmup-ms T] [--duration-ms T] [--copy]
 *
 * As the Rust bench: both stacks busy-poll, leave UDP checksums out (two processes on one
 * memif link), the client runs on core 0 and the server on core 1 by default. The client
 * sends a message, waits for the whole answer, and records each round trip (send to answer
 * received) after the warm-up. Default: zero-copy both ways (bypass_socket_sendbuf_chunks, the
 * payload written into the lent chunk; bypass_socket_recv_segments, read in place, released);
 * --copy: bypass_socket_send and bypass_socket_recv. Prints p50, p90, p99, p99.9 and max. */
#include <string.h>

#include "util.h"

#define PROG "pingpong"

static const uint8_t SERVER_MAC[6] = {0x02, 0x80, 0, 0, 0, 1};
static const uint8_t CLIENT_MAC[6] = {0x02, 0x80, 0, 0, 0, 2};

static void usage(void) {
  fprintf(stderr,
          "usage: pingpong server SOCKET_PATH [--core N] [--copy]\n"
          "       pingpong client SOCKET_PATH [--core N] [--size B] [--warmup-ms T] "
          "[--duration-ms T] [--copy]\n");
  exit(2);
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* One message out: written in place (zero-copy) or copied. */
static bypass_result send_msg(bypass_socket s, const uint8_t *p, size_t len, int copy) {
  if (copy) return bypass_socket_send(s, p, len, NULL);
  bypass_sendbuf b;
  bypass_chunk c[4];
  size_t n = 0;
  bypass_result rc = bypass_socket_sendbuf_chunks(s, len, &b, c, 4, &n);
  if (rc == BYPASS_ERR_BUFFER_TOO_SMALL) bypass_sendbuf_discard(b);
  if (rc != BYPASS_OK) return rc;
  size_t at = 0;
  for (size_t k = 0; k < n; k++) {
    memcpy(c[k].ptr, p + at, c[k].len);
    at += c[k].len;
  }
  return bypass_sendbuf_send(b, NULL);
}

/* One message in: copied into `buf` (cap bytes) with --copy; else lent in place, its first
 * bytes copied into `buf` (the server answers with them), and kept in *held until the next
 * call: as the Rust bench keeps its last message, the buffers go back to the stack after the
 * answer has left, off the round trip's path. Its length in *len. */
static bypass_result recv_msg(bypass_socket s, uint8_t *buf, size_t cap, size_t *len, int copy,
                              bypass_msg *held) {
  if (copy) return bypass_socket_recv(s, buf, cap, len);
  if (held->id) {
    bypass_result rc = bypass_msg_release(*held);
    held->id = 0;
    if (rc != BYPASS_OK) return rc;
  }
  bypass_msg m;
  bypass_segment seg[4];
  size_t n = 0;
  bypass_result rc = bypass_socket_recv_segments(s, &m, seg, 4, &n);
  if (rc != BYPASS_OK && rc != BYPASS_ERR_BUFFER_TOO_SMALL) return rc;
  *held = m;
  *len = 0;
  for (size_t k = 0; k < n && rc == BYPASS_OK; k++) {
    if (*len + seg[k].len <= cap) memcpy(buf + *len, seg[k].ptr, seg[k].len);
    *len += seg[k].len;
  }
  return rc;
}

int main(int argc, char **argv) {
  if (argc < 3) usage();
  int server = strcmp(argv[1], "server") == 0;
  if (!server && strcmp(argv[1], "client") != 0) usage();
  const char *path = argv[2];
  long core = server ? 1 : 0;
  size_t size = 64;
  uint64_t warm_ms = 200, dur_ms = 1000;
  int copy = 0;
  for (int i = 3; i < argc; i++) {
    if (strcmp(argv[i], "--copy") == 0) {
      copy = 1;
    } else if (i + 1 < argc && strcmp(argv[i], "--core") == 0) {
      core = strtol(argv[++i], NULL, 10);
    } else if (i + 1 < argc && strcmp(argv[i], "--size") == 0) {
      size = strtoull(argv[++i], NULL, 10);
    } else if (i + 1 < argc && strcmp(argv[i], "--warmup-ms") == 0) {
      warm_ms = strtoull(argv[++i], NULL, 10);
    } else if (i + 1 < argc && strcmp(argv[i], "--duration-ms") == 0) {
      dur_ms = strtoull(argv[++i], NULL, 10);
    } else {
      usage();
    }
  }
  if (size == 0 || size > 1400) {
    fprintf(stderr, PROG ": --size must be 1..1400 (a single packet)\n");
    return 2;
  }

  bypass_config cfg;
  CHECK(bypass_config_new(&cfg));
  CHECK(bypass_config_set_memif(cfg, path, server ? BYPASS_MEMIF_SERVER : BYPASS_MEMIF_CLIENT, 0));
  CHECK(bypass_config_set_ip(cfg, server ? "10.80.0.1" : "10.80.0.2"));
  CHECK(bypass_config_set_mac(cfg, server ? SERVER_MAC : CLIENT_MAC));
  CHECK(bypass_config_add_static_arp(cfg, server ? "10.80.0.2" : "10.80.0.1",
                                     server ? CLIENT_MAC : SERVER_MAC));
  CHECK(bypass_config_set_omit_checksums(cfg, true));
  CHECK(bypass_config_set_link_timeout_ms(cfg, 20000));
  if (core >= 0) CHECK(bypass_config_set_pin_core(cfg, (uint32_t)core));
  bypass_stack stack;
  CHECK(bypass_stack_new(cfg, &stack));
  CHECK(bypass_config_free(cfg));

  uint8_t buf[1400];
  memset(buf, 0xa5, sizeof buf);
  size_t len = 0;
  bypass_msg held = {0};
  if (server) {
    bypass_listener l;
    CHECK(bypass_stack_listen(stack, &l));
    bypass_socket s;
    CHECK(bypass_listener_accept(l, 20000, &s));
    CHECK(bypass_listener_free(l));
    CHECK(bypass_socket_set_timeout_ms(s, -1));
    uint64_t n = 0;
    for (;;) {
      bypass_result rc = recv_msg(s, buf, sizeof buf, &len, copy, &held);
      if (rc == BYPASS_ERR_CLOSED) break;
      if (rc != BYPASS_OK) die(PROG, "receive", rc);
      rc = send_msg(s, buf, len, copy);
      if (rc != BYPASS_OK) die(PROG, "send", rc);
      n++;
    }
    if (held.id) CHECK(bypass_msg_release(held));
    printf("pingpong server: %llu messages answered\n", (unsigned long long)n);
    CHECK(bypass_socket_abort(s));
    CHECK(bypass_stack_free(stack));
    return 0;
  }

  bypass_socket s;
  CHECK(bypass_stack_connect(stack, "10.80.0.1", 7200, 20000, &s));
  CHECK(bypass_socket_set_timeout_ms(s, 5000));
  size_t cap = 1 << 20, count = 0;
  uint64_t *rtt = malloc(cap * sizeof *rtt);
  if (!rtt) return 1;
  uint64_t start = now_ns(), measure_from = start + warm_ms * 1000000, end = measure_from + dur_ms * 1000000;
  uint64_t t0 = now_ns();
  for (;;) {
    bypass_result rc = send_msg(s, buf, size, copy);
    if (rc != BYPASS_OK) die(PROG, "send", rc);
    rc = recv_msg(s, buf, sizeof buf, &len, copy, &held);
    if (rc != BYPASS_OK) die(PROG, "receive", rc);
    uint64_t t1 = now_ns();
    if (len != size) {
      fprintf(stderr, PROG ": pong of %zu bytes, sent %zu\n", len, size);
      return 1;
    }
    if (t0 >= measure_from) {
      if (count == cap) {
        cap *= 2;
        uint64_t *r = realloc(rtt, cap * sizeof *rtt);
        if (!r) return 1;
        rtt = r;
      }
      rtt[count++] = t1 - t0;
    }
    if (t1 >= end) break;
    t0 = t1;
  }
  if (held.id) CHECK(bypass_msg_release(held));
  CHECK(bypass_socket_close(s));
  CHECK(bypass_stack_free(stack));
  qsort(rtt, count, sizeof *rtt, cmp_u64);
#define Q(p) (count ? rtt[(size_t)((count - 1) * (p))] / 1000.0 : 0.0)
  printf("pingpong C %s: %zu B, %zu round trips: RTT p50 %.2f us, p90 %.2f us, p99 %.2f us, "
         "p99.9 %.2f us, max %.2f us\n",
         copy ? "copy" : "zero-copy", size, count, Q(0.5), Q(0.9), Q(0.99), Q(0.999),
         count ? rtt[count - 1] / 1000.0 : 0.0);
  free(rtt);
  return 0;
}
