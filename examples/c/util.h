/* Shared by the C examples: error reporting and a clock. */
#ifndef BYPASS_EXAMPLE_UTIL_H
#define BYPASS_EXAMPLE_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bypass.h"

/* Prints the failed call, libbypass's message for it and the code's name; exits 1. */
static inline void die(const char *prog, const char *call, bypass_result rc) {
  char msg[1024];
  bypass_last_error(msg, sizeof msg);
  fprintf(stderr, "%s: %s failed: %s [%s]\n", prog, call, msg, bypass_strerror(rc));
  exit(1);
}

#define CHECK(call)                                                                \
  do {                                                                             \
    bypass_result rc_ = (call);                                                    \
    if (rc_ != BYPASS_OK) die(PROG, #call, rc_);                                   \
  } while (0)

static inline uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static inline void put_u64le(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint64_t get_u64le(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
  return v;
}

/* FNV-1a, 64 bits (the Rust examples' checksum). */
static inline uint64_t fnv1a64_update(uint64_t h, const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x00000100000001b3ull;
  return h;
}
#define FNV1A64_INIT 0xcbf29ce484222325ull

/* Sends `len` bytes at `data` as one message, zero-copy style: the stack lends packet
 * buffers (bypass_socket_sendbuf), the bytes are written into its chunks, and the chunks are
 * queued as they are. Returns the first failing code. */
static inline bypass_result send_in_place(bypass_socket s, const uint8_t *data, size_t len) {
  bypass_sendbuf b;
  bypass_result rc = bypass_socket_sendbuf(s, len, &b);
  if (rc != BYPASS_OK) return rc;
  bypass_chunk chunks[256];
  size_t n = 0, at = 0;
  rc = bypass_sendbuf_chunks(b, chunks, 256, &n);
  if (rc == BYPASS_OK) {
    for (size_t k = 0; k < n; k++) {
      memcpy(chunks[k].ptr, data + at, chunks[k].len);
      at += chunks[k].len;
    }
  } else if (rc == BYPASS_ERR_BUFFER_TOO_SMALL) {
    /* More chunks than the array holds: write by offset instead. */
    rc = bypass_sendbuf_write(b, 0, data, len);
  }
  if (rc != BYPASS_OK) {
    bypass_sendbuf_discard(b);
    return rc;
  }
  return bypass_sendbuf_send(b, NULL);
}

#endif
