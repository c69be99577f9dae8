/* Receives a file sent by file_send (examples/file_send.rs or file_send.c) over memif and
 * verifies its checksum; compatible with examples/file_recv.rs:
 *
 *   file_recv SOCKET_PATH OUT_FILE
 *
 * Serves the memif socket and accepts one connection on 10.78.0.1:7200. The protocol:
 *   - "BYPF" + total length (u64 LE): the header;
 *   - the file's bytes, in messages of up to 1 MiB (each delivered whole);
 *   - "BYPE" + FNV-1a 64 of the whole file (u64 LE): the trailer.
 * The receiver hashes what it wrote, answers "BYPA" + its hash + its length, and exits 0 only
 * if the sender's hash matches. Each data message is read in place (bypass_socket_recv_msg:
 * its segments are the stack's buffers) and written to the file from there. */
#include <string.h>

#include "util.h"

#define PROG "file_recv"

static const uint8_t RECV_MAC[6] = {0x02, 0x78, 0, 0, 0, 1};
static const uint8_t SEND_MAC[6] = {0x02, 0x78, 0, 0, 0, 2};

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: file_recv SOCKET_PATH OUT_FILE\n");
    return 2;
  }
  const char *path = argv[1], *out = argv[2];
  bypass_config cfg;
  CHECK(bypass_config_new(&cfg));
  CHECK(bypass_config_set_memif(cfg, path, BYPASS_MEMIF_SERVER, 0));
  CHECK(bypass_config_set_ip(cfg, "10.78.0.1"));
  CHECK(bypass_config_set_mac(cfg, RECV_MAC));
  CHECK(bypass_config_add_static_arp(cfg, "10.78.0.2", SEND_MAC));
  CHECK(bypass_config_set_link_timeout_ms(cfg, 3600 * 1000));
  bypass_stack stack;
  CHECK(bypass_stack_new(cfg, &stack));
  CHECK(bypass_config_free(cfg));
  printf("file_recv: waiting on memif %s\n", path);
  fflush(stdout);
  bypass_listener l;
  CHECK(bypass_stack_listen(stack, &l));
  bypass_socket s;
  CHECK(bypass_listener_accept(l, 3600 * 1000, &s));
  CHECK(bypass_listener_free(l));
  CHECK(bypass_socket_set_timeout_ms(s, 30000));

  uint8_t small[64];
  size_t len = 0;
  CHECK(bypass_socket_recv(s, small, sizeof small, &len));
  if (len < 12 || memcmp(small, "BYPF", 4) != 0) {
    fprintf(stderr, PROG ": first message is not a BYPF header\n");
    return 1;
  }
  uint64_t total = get_u64le(small + 4);
  uint64_t t0 = now_ns();
  FILE *f = fopen(out, "wb");
  if (!f) {
    perror(out);
    return 1;
  }
  uint64_t hash = FNV1A64_INIT, got = 0, chunks = 0;
  while (got < total) {
    bypass_msg m;
    CHECK(bypass_socket_recv_msg(s, &m));
    bypass_segment segs[256];
    size_t nseg = 0;
    CHECK(bypass_msg_segments(m, segs, 256, &nseg));
    for (size_t k = 0; k < nseg; k++) {
      if (got + segs[k].len > total) {
        fprintf(stderr, PROG ": more than the announced %llu bytes\n", (unsigned long long)total);
        return 1;
      }
      hash = fnv1a64_update(hash, segs[k].ptr, segs[k].len);
      if (fwrite(segs[k].ptr, 1, segs[k].len, f) != segs[k].len) {
        perror(out);
        return 1;
      }
      got += segs[k].len;
    }
    CHECK(bypass_msg_release(m));
    chunks++;
  }
  if (fclose(f) != 0) {
    perror(out);
    return 1;
  }
  double secs = (now_ns() - t0) / 1e9;
  CHECK(bypass_socket_recv(s, small, sizeof small, &len));
  if (len < 12 || memcmp(small, "BYPE", 4) != 0) {
    fprintf(stderr, PROG ": no BYPE trailer after the data\n");
    return 1;
  }
  uint64_t theirs = get_u64le(small + 4);
  uint8_t ack[20];
  memcpy(ack, "BYPA", 4);
  put_u64le(ack + 4, hash);
  put_u64le(ack + 12, got);
  CHECK(bypass_socket_send(s, ack, sizeof ack, NULL));
  int ok = theirs == hash;
  printf("file_recv: received %llu bytes in %llu messages into %s (%.1f MiB/s); fnv1a64 %016llx, "
         "sender's %016llx: %s\n",
         (unsigned long long)got, (unsigned long long)chunks, out,
         got / 1048576.0 / (secs > 1e-9 ? secs : 1e-9), (unsigned long long)hash,
         (unsigned long long)theirs, ok ? "checksum ok" : "checksum MISMATCH");
  fflush(stdout);
  /* The sender closes once it has read our answer: that close is the proof it arrived
   * (freeing the socket now would reset the connection under it). */
  bypass_result rc = bypass_socket_recv(s, small, sizeof small, &len);
  if (rc != BYPASS_ERR_CLOSED) {
    if (rc == BYPASS_OK)
      fprintf(stderr, PROG ": unexpected %zu-byte message after the trailer\n", len);
    else
      die(PROG, "waiting for the sender to close", rc);
    return 1;
  }
  CHECK(bypass_socket_abort(s));
  CHECK(bypass_stack_free(stack));
  return ok ? 0 : 1;
}
