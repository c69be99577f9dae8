/* Echo client over memif in C, compatible with examples/echo_server.rs (and echo_server.c):
 *
 *   echo_client SOCKET_PATH [ROUNDS]
 *
 * Each round sends messages of 1 B, 64 B, 1400 B, 8 KiB, 64 KiB and 1 MiB, waits for each
 * echo and compares it byte for byte; byte i of message k of round r is
 * (i * 131 + r * 6 + k) mod 256, as the Rust client makes them. Both ways of sending and of
 * receiving are used in turn: even messages are written in place into lent packet buffers
 * (bypass_socket_sendbuf) and received in place (bypass_socket_recv_msg), odd ones are sent
 * and received by copy (bypass_socket_send, bypass_socket_recv). Prints the count and the
 * median and worst round trip; exits 1 on any difference. */
#include <string.h>

#include "util.h"

#define PROG "echo_client"

static const uint8_t SERVER_MAC[6] = {0x02, 0x77, 0, 0, 0, 1};
static const uint8_t CLIENT_MAC[6] = {0x02, 0x77, 0, 0, 0, 2};
static const size_t SIZES[6] = {1, 64, 1400, 8 << 10, 64 << 10, 1 << 20};

static void usage(void) {
  fprintf(stderr, "usage: echo_client SOCKET_PATH [ROUNDS]\n");
  exit(2);
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static void print_duration(const char *what, uint64_t ns) {
  if (ns >= 1000000)
    printf("%s %.3fms", what, ns / 1e6);
  else
    printf("%s %.3fus", what, ns / 1e3);
}

int main(int argc, char **argv) {
  if (argc < 2 || argc > 3) usage();
  const char *path = argv[1];
  unsigned rounds = 10;
  if (argc == 3) {
    char *end;
    unsigned long r = strtoul(argv[2], &end, 10);
    if (*end || end == argv[2]) usage();
    rounds = (unsigned)r;
  }

  bypass_config cfg;
  CHECK(bypass_config_new(&cfg));
  CHECK(bypass_config_set_memif(cfg, path, BYPASS_MEMIF_CLIENT, 0));
  CHECK(bypass_config_set_ip(cfg, "10.77.0.2"));
  CHECK(bypass_config_set_mac(cfg, CLIENT_MAC));
  CHECK(bypass_config_add_static_arp(cfg, "10.77.0.1", SERVER_MAC));
  CHECK(bypass_config_set_no_accept(cfg, true));
  CHECK(bypass_config_set_link_timeout_ms(cfg, 20000));
  bypass_stack stack;
  CHECK(bypass_stack_new(cfg, &stack));
  CHECK(bypass_config_free(cfg));
  bypass_socket s;
  CHECK(bypass_stack_connect(stack, "10.77.0.1", 7200, 10000, &s));

  size_t max = SIZES[5];
  uint8_t *msg = malloc(max), *back = malloc(max);
  uint64_t *rtts = malloc(sizeof(uint64_t) * (rounds * 6 + 1));
  if (!msg || !back || !rtts) {
    fprintf(stderr, PROG ": out of memory\n");
    return 1;
  }
  uint64_t msgs = 0, bytes = 0;
  int bad = 0;
  for (unsigned round = 0; round < rounds && !bad; round++) {
    for (unsigned k = 0; k < 6; k++) {
      size_t len = SIZES[k];
      uint8_t seed = (uint8_t)(round * 6 + k);
      for (size_t i = 0; i < len; i++) msg[i] = (uint8_t)((uint8_t)i * 131u + seed);
      uint64_t t0 = now_ns();
      size_t got = 0;
      int same;
      if (k % 2 == 0) {
        bypass_result rc = send_in_place(s, msg, len);
        if (rc != BYPASS_OK) die(PROG, "send_in_place", rc);
        bypass_msg m;
        CHECK(bypass_socket_recv_msg(s, &m));
        rtts[msgs] = now_ns() - t0;
        bypass_segment segs[64];
        size_t nseg = 0;
        CHECK(bypass_msg_segments(m, segs, 64, &nseg));
        same = 1;
        for (size_t j = 0; j < nseg; j++) {
          if (got + segs[j].len > len || memcmp(segs[j].ptr, msg + got, segs[j].len) != 0)
            same = 0;
          got += segs[j].len;
        }
        CHECK(bypass_msg_release(m));
      } else {
        CHECK(bypass_socket_send(s, msg, len, NULL));
        CHECK(bypass_socket_recv(s, back, max, &got));
        rtts[msgs] = now_ns() - t0;
        same = got == len && memcmp(back, msg, len) == 0;
      }
      if (!same || got != len) {
        fprintf(stderr, PROG ": echo of %zu bytes differs (got %zu bytes back)\n", len, got);
        bad = 1;
        break;
      }
      msgs++;
      bytes += len;
    }
  }
  CHECK(bypass_socket_close(s));
  CHECK(bypass_stack_free(stack));
  if (!bad) {
    qsort(rtts, msgs, sizeof(uint64_t), cmp_u64);
    uint64_t median = msgs ? rtts[msgs / 2] : 0, worst = msgs ? rtts[msgs - 1] : 0;
    printf("echo_client: %llu messages (%llu bytes) echoed intact;", (unsigned long long)msgs,
           (unsigned long long)bytes);
    print_duration(" round trip median", median);
    print_duration(", worst", worst);
    printf(" (sizes 1 B to 1 MiB)\n");
  }
  free(msg);
  free(back);
  free(rtts);
  return bad;
}
