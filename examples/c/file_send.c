/* Sends a file to file_recv (examples/file_recv.rs or file_recv.c) over memif; compatible
 * with examples/file_send.rs (see file_recv.c for the protocol):
 *
 *   file_send SOCKET_PATH IN_FILE [CHUNK_BYTES]
 *
 * The file is read whole, then sent as messages of CHUNK_BYTES (default 1 MiB), each written
 * straight into packet buffers the stack lends (bypass_socket_sendbuf): one copy, from the
 * file's buffer into the packets, as the Rust sender's transport makes. Exits 0 only if the
 * receiver's checksum and length match ours. */
#include <string.h>

#include "util.h"

#define PROG "file_send"

static const uint8_t RECV_MAC[6] = {0x02, 0x78, 0, 0, 0, 1};
static const uint8_t SEND_MAC[6] = {0x02, 0x78, 0, 0, 0, 2};

static void usage(void) {
  fprintf(stderr, "usage: file_send SOCKET_PATH IN_FILE [CHUNK_BYTES]\n");
  exit(2);
}

int main(int argc, char **argv) {
  if (argc < 3 || argc > 4) usage();
  const char *path = argv[1], *in = argv[2];
  size_t chunk = 1 << 20;
  if (argc == 4) {
    char *end;
    unsigned long long c = strtoull(argv[3], &end, 10);
    if (*end || end == argv[3] || c == 0) usage();
    chunk = (size_t)c;
  }
  FILE *f = fopen(in, "rb");
  if (!f) {
    perror(in);
    return 1;
  }
  fseek(f, 0, SEEK_END);
  long flen = ftell(f);
  fseek(f, 0, SEEK_SET);
  if (flen < 0) {
    perror(in);
    return 1;
  }
  size_t size = (size_t)flen;
  uint8_t *data = malloc(size ? size : 1);
  if (!data || fread(data, 1, size, f) != size) {
    fprintf(stderr, PROG ": reading %s failed\n", in);
    return 1;
  }
  fclose(f);
  uint64_t hash = fnv1a64_update(FNV1A64_INIT, data, size);

  bypass_config cfg;
  CHECK(bypass_config_new(&cfg));
  CHECK(bypass_config_set_memif(cfg, path, BYPASS_MEMIF_CLIENT, 0));
  CHECK(bypass_config_set_ip(cfg, "10.78.0.2"));
  CHECK(bypass_config_set_mac(cfg, SEND_MAC));
  CHECK(bypass_config_add_static_arp(cfg, "10.78.0.1", RECV_MAC));
  CHECK(bypass_config_set_no_accept(cfg, true));
  CHECK(bypass_config_set_link_timeout_ms(cfg, 20000));
  bypass_stack stack;
  CHECK(bypass_stack_new(cfg, &stack));
  CHECK(bypass_config_free(cfg));
  bypass_socket s;
  CHECK(bypass_stack_connect(stack, "10.78.0.1", 7200, 10000, &s));
  CHECK(bypass_socket_set_timeout_ms(s, 30000));

  uint64_t t0 = now_ns();
  uint8_t header[12];
  memcpy(header, "BYPF", 4);
  put_u64le(header + 4, size);
  CHECK(bypass_socket_send(s, header, sizeof header, NULL));
  uint64_t chunks = 0;
  for (size_t at = 0; at < size; at += chunk) {
    size_t n = size - at < chunk ? size - at : chunk;
    bypass_result rc = send_in_place(s, data + at, n);
    if (rc != BYPASS_OK) die(PROG, "send_in_place", rc);
    chunks++;
  }
  uint8_t trailer[12];
  memcpy(trailer, "BYPE", 4);
  put_u64le(trailer + 4, hash);
  CHECK(bypass_socket_send(s, trailer, sizeof trailer, NULL));
  uint8_t ack[64];
  size_t len = 0;
  CHECK(bypass_socket_recv(s, ack, sizeof ack, &len));
  double secs = (now_ns() - t0) / 1e9;
  if (len != 20 || memcmp(ack, "BYPA", 4) != 0) {
    fprintf(stderr, PROG ": the receiver's answer is not a BYPA acknowledgement\n");
    return 1;
  }
  uint64_t theirs = get_u64le(ack + 4), their_len = get_u64le(ack + 12);
  CHECK(bypass_socket_close(s));
  CHECK(bypass_stack_free(stack));
  int ok = theirs == hash && their_len == size;
  printf("file_send: sent %zu bytes in %llu messages (%.1f MiB/s); fnv1a64 %016llx, receiver's "
         "%016llx over %llu bytes: %s\n",
         size, (unsigned long long)chunks, size / 1048576.0 / (secs > 1e-9 ? secs : 1e-9),
         (unsigned long long)hash, (unsigned long long)theirs, (unsigned long long)their_len,
         ok ? "checksum ok" : "checksum MISMATCH");
  free(data);
  return ok ? 0 : 1;
}
