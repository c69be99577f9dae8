/*
 * A fake CUDA driver (libcuda.so.1) for testing bypass's GPU path on machines without a GPU.
 * It is not a GPU and proves nothing about one: it checks the host side of mem::gpu and the
 * socket's receive into device memory against the driver API's rules, adversarially:
 *
 * - "device memory" is host memory from malloc; pointers are checked on every call
 *   (a copy outside an allocation, a double free: CUDA_ERROR_INVALID_VALUE);
 * - every call but cuInit/cuDriverGetVersion/cuDeviceGet* needs a current context on the
 *   calling thread (CUDA_ERROR_INVALID_CONTEXT), as the real driver does;
 * - asynchronous copies on a stream are deferred: they run (reading the host source then)
 *   only at cuStreamSynchronize, or at cuEventSynchronize / a cuEventQuery of an event
 *   recorded after them, and an event's first query answers CUDA_ERROR_NOT_READY. A host
 *   buffer released or reused before its copy completed therefore shows as wrong data;
 * - cuMemcpyDtoH does not wait for non-blocking streams (as the real driver does not), so
 *   reading device memory before the copies were waited for shows as wrong data;
 * - host registration ranges are tracked (double registration, unregistering what was not
 *   registered: errors), and destroying a stream with copies pending is counted.
 *
 * Build: cc -shared -fPIC -O2 -o libcuda.so.1 fake_cuda.c -lpthread
 * Use:   LD_LIBRARY_PATH=<dir of libcuda.so.1> <test binary>
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;

enum {
    OK = 0,
    INVALID_VALUE = 1,
    OUT_OF_MEMORY = 2,
    NOT_INITIALIZED = 3,
    INVALID_DEVICE = 101,
    INVALID_CONTEXT = 201,
    INVALID_HANDLE = 400,
    NOT_READY = 600,
    ALREADY_REGISTERED = 712,
    NOT_REGISTERED = 713,
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int initialised;
static int ctx_token; /* the primary context is &ctx_token */
static int ctx_refs;
static __thread void *current;

#define MAX_ALLOCS 4096
static struct { char *p; size_t len; } allocs[MAX_ALLOCS];
#define MAX_REGS 256
static struct { char *p; size_t len; } regs[MAX_REGS];

struct copy { char *dst; const char *src; size_t len; };
struct stream {
    int magic;
    struct copy *q;
    size_t cap, head, tail; /* pending copies q[head..tail) (absolute indices, never wrap) */
};
struct event {
    int magic;
    struct stream *s;
    size_t upto;   /* the stream's tail when recorded */
    int queried;   /* first query says NOT_READY */
};
#define STREAM_MAGIC 0x5354
#define EVENT_MAGIC 0x4556

unsigned long long fake_cuda_pending_at_destroy;

static CUresult need_ctx(void) {
    if (!initialised) return NOT_INITIALIZED;
    return current == &ctx_token && ctx_refs > 0 ? OK : INVALID_CONTEXT;
}

static int dev_span(CUdeviceptr d, size_t len) {
    char *p = (char *)(uintptr_t)d;
    for (int i = 0; i < MAX_ALLOCS; i++)
        if (allocs[i].p && p >= allocs[i].p && p + len <= allocs[i].p + allocs[i].len) return 1;
    return 0;
}

static void run_upto(struct stream *s, size_t upto) {
    while (s->head < upto && s->head < s->tail) {
        struct copy *c = &s->q[s->head % s->cap];
        memcpy(c->dst, c->src, c->len);
        s->head++;
    }
}

CUresult cuInit(unsigned flags) {
    if (flags) return INVALID_VALUE;
    initialised = 1;
    return OK;
}
CUresult cuDriverGetVersion(int *v) { *v = 13000; return OK; }
CUresult cuDeviceGetCount(int *n) { if (!initialised) return NOT_INITIALIZED; *n = 1; return OK; }
CUresult cuDeviceGet(CUdevice *d, int ord) {
    if (!initialised) return NOT_INITIALIZED;
    if (ord != 0) return INVALID_DEVICE;
    *d = 0;
    return OK;
}
CUresult cuDeviceGetName(char *name, int len, CUdevice d) {
    if (d != 0) return INVALID_DEVICE;
    snprintf(name, (size_t)len, "bypass fake CUDA device (no GPU)");
    return OK;
}
CUresult cuDevicePrimaryCtxRetain(void **ctx, CUdevice d) {
    if (d != 0) return INVALID_DEVICE;
    pthread_mutex_lock(&mu);
    ctx_refs++;
    pthread_mutex_unlock(&mu);
    *ctx = &ctx_token;
    return OK;
}
CUresult cuDevicePrimaryCtxRelease_v2(CUdevice d) {
    if (d != 0) return INVALID_DEVICE;
    pthread_mutex_lock(&mu);
    CUresult r = ctx_refs > 0 ? (ctx_refs--, OK) : INVALID_CONTEXT;
    pthread_mutex_unlock(&mu);
    return r;
}
CUresult cuCtxSetCurrent(void *ctx) {
    if (ctx && ctx != &ctx_token) return INVALID_CONTEXT;
    current = ctx;
    return OK;
}

CUresult cuMemAlloc_v2(CUdeviceptr *d, size_t len) {
    CUresult r = need_ctx();
    if (r) return r;
    if (!len) return INVALID_VALUE;
    char *p = malloc(len);
    if (!p) return OUT_OF_MEMORY;
    memset(p, 0x5a, len); /* not zero: contents are undefined */
    pthread_mutex_lock(&mu);
    for (int i = 0; i < MAX_ALLOCS; i++)
        if (!allocs[i].p) {
            allocs[i].p = p;
            allocs[i].len = len;
            pthread_mutex_unlock(&mu);
            *d = (CUdeviceptr)(uintptr_t)p;
            return OK;
        }
    pthread_mutex_unlock(&mu);
    free(p);
    return OUT_OF_MEMORY;
}
CUresult cuMemFree_v2(CUdeviceptr d) {
    CUresult r = need_ctx();
    if (r) return r;
    pthread_mutex_lock(&mu);
    for (int i = 0; i < MAX_ALLOCS; i++)
        if (allocs[i].p == (char *)(uintptr_t)d) {
            free(allocs[i].p);
            allocs[i].p = NULL;
            pthread_mutex_unlock(&mu);
            return OK;
        }
    pthread_mutex_unlock(&mu);
    return INVALID_VALUE;
}
CUresult cuMemHostRegister_v2(void *p, size_t len, unsigned flags) {
    CUresult r = need_ctx();
    if (r) return r;
    (void)flags;
    if (!p || !len) return INVALID_VALUE;
    pthread_mutex_lock(&mu);
    for (int i = 0; i < MAX_REGS; i++)
        if (regs[i].p && (char *)p < regs[i].p + regs[i].len && (char *)p + len > regs[i].p) {
            pthread_mutex_unlock(&mu);
            return ALREADY_REGISTERED;
        }
    for (int i = 0; i < MAX_REGS; i++)
        if (!regs[i].p) {
            regs[i].p = p;
            regs[i].len = len;
            /* touch every page, as pinning faults them in */
            for (size_t o = 0; o < len; o += 4096) ((volatile char *)p)[o];
            pthread_mutex_unlock(&mu);
            return OK;
        }
    pthread_mutex_unlock(&mu);
    return OUT_OF_MEMORY;
}
CUresult cuMemHostUnregister(void *p) {
    CUresult r = need_ctx();
    if (r) return r;
    pthread_mutex_lock(&mu);
    for (int i = 0; i < MAX_REGS; i++)
        if (regs[i].p == p) {
            regs[i].p = NULL;
            pthread_mutex_unlock(&mu);
            return OK;
        }
    pthread_mutex_unlock(&mu);
    return NOT_REGISTERED;
}

CUresult cuStreamCreate(void **s, unsigned flags) {
    CUresult r = need_ctx();
    if (r) return r;
    (void)flags;
    struct stream *st = calloc(1, sizeof *st);
    st->magic = STREAM_MAGIC;
    st->cap = 1 << 16;
    st->q = calloc(st->cap, sizeof *st->q);
    *s = st;
    return OK;
}
CUresult cuStreamSynchronize(void *s) {
    CUresult r = need_ctx();
    if (r) return r;
    struct stream *st = s;
    if (!st) return OK; /* the legacy stream runs everything at once here */
    if (st->magic != STREAM_MAGIC) return INVALID_HANDLE;
    run_upto(st, st->tail);
    return OK;
}
CUresult cuStreamDestroy_v2(void *s) {
    CUresult r = need_ctx();
    if (r) return r;
    struct stream *st = s;
    if (!st || st->magic != STREAM_MAGIC) return INVALID_HANDLE;
    if (st->head != st->tail) fake_cuda_pending_at_destroy++;
    run_upto(st, st->tail); /* the real driver completes pending work */
    st->magic = 0;
    free(st->q);
    free(st);
    return OK;
}
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr d, const void *src, size_t len, void *s) {
    CUresult r = need_ctx();
    if (r) return r;
    pthread_mutex_lock(&mu);
    int ok = dev_span(d, len);
    pthread_mutex_unlock(&mu);
    if (!ok || !src) return INVALID_VALUE;
    struct stream *st = s;
    if (!st) {
        memcpy((char *)(uintptr_t)d, src, len);
        return OK;
    }
    if (st->magic != STREAM_MAGIC) return INVALID_HANDLE;
    if (st->tail - st->head == st->cap) run_upto(st, st->head + 1); /* the engine catches up */
    st->q[st->tail % st->cap] = (struct copy){(char *)(uintptr_t)d, src, len};
    st->tail++;
    return OK;
}
CUresult cuMemcpyDtoH_v2(void *dst, CUdeviceptr d, size_t len) {
    CUresult r = need_ctx();
    if (r) return r;
    pthread_mutex_lock(&mu);
    int ok = dev_span(d, len);
    pthread_mutex_unlock(&mu);
    if (!ok || !dst) return INVALID_VALUE;
    memcpy(dst, (char *)(uintptr_t)d, len);
    return OK;
}
CUresult cuMemsetD8_v2(CUdeviceptr d, unsigned char v, size_t len) {
    CUresult r = need_ctx();
    if (r) return r;
    pthread_mutex_lock(&mu);
    int ok = dev_span(d, len);
    pthread_mutex_unlock(&mu);
    if (!ok) return INVALID_VALUE;
    memset((char *)(uintptr_t)d, v, len);
    return OK;
}

CUresult cuEventCreate(void **e, unsigned flags) {
    CUresult r = need_ctx();
    if (r) return r;
    (void)flags;
    struct event *ev = calloc(1, sizeof *ev);
    ev->magic = EVENT_MAGIC;
    *e = ev;
    return OK;
}
CUresult cuEventDestroy_v2(void *e) {
    struct event *ev = e;
    if (!ev || ev->magic != EVENT_MAGIC) return INVALID_HANDLE;
    ev->magic = 0;
    free(ev);
    return OK;
}
CUresult cuEventRecord(void *e, void *s) {
    CUresult r = need_ctx();
    if (r) return r;
    struct event *ev = e;
    struct stream *st = s;
    if (!ev || ev->magic != EVENT_MAGIC || !st || st->magic != STREAM_MAGIC) return INVALID_HANDLE;
    ev->s = st;
    ev->upto = st->tail;
    ev->queried = 0;
    return OK;
}
CUresult cuEventQuery(void *e) {
    CUresult r = need_ctx();
    if (r) return r;
    struct event *ev = e;
    if (!ev || ev->magic != EVENT_MAGIC) return INVALID_HANDLE;
    if (!ev->s) return OK;
    if (!ev->queried) {
        ev->queried = 1;
        return NOT_READY;
    }
    run_upto(ev->s, ev->upto);
    return OK;
}
CUresult cuEventSynchronize(void *e) {
    CUresult r = need_ctx();
    if (r) return r;
    struct event *ev = e;
    if (!ev || ev->magic != EVENT_MAGIC) return INVALID_HANDLE;
    if (ev->s) run_upto(ev->s, ev->upto);
    return OK;
}

CUresult cuGetErrorName(CUresult r, const char **s) {
    switch (r) {
    case OK: *s = "CUDA_SUCCESS"; return OK;
    case INVALID_VALUE: *s = "CUDA_ERROR_INVALID_VALUE"; return OK;
    case OUT_OF_MEMORY: *s = "CUDA_ERROR_OUT_OF_MEMORY"; return OK;
    case NOT_INITIALIZED: *s = "CUDA_ERROR_NOT_INITIALIZED"; return OK;
    case INVALID_DEVICE: *s = "CUDA_ERROR_INVALID_DEVICE"; return OK;
    case INVALID_CONTEXT: *s = "CUDA_ERROR_INVALID_CONTEXT"; return OK;
    case INVALID_HANDLE: *s = "CUDA_ERROR_INVALID_HANDLE"; return OK;
    case NOT_READY: *s = "CUDA_ERROR_NOT_READY"; return OK;
    case ALREADY_REGISTERED: *s = "CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED"; return OK;
    case NOT_REGISTERED: *s = "CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED"; return OK;
    default: *s = NULL; return INVALID_VALUE;
    }
}
CUresult cuGetErrorString(CUresult r, const char **s) {
    const char *n;
    if (cuGetErrorName(r, &n)) return INVALID_VALUE;
    *s = n; /* the fake's descriptions are its names */
    return OK;
}
