/* qcompile's standalone runner for a TVM-compiled model object (no TVM runtime needed).
 *
 * usage: model_runner ARGS.bin OUT.bin
 * ARGS.bin holds every argument of the model's `main` in order (input, weights..., output),
 * each as: int32 dtype code, int32 dtype bits, int32 ndim, int64 shape[ndim], raw data.
 * OUT.bin receives the raw data of the last argument (the output) after the call.
 * Parallel loops run on TVM_NUM_THREADS threads (default 1).
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dlpack/dlpack.h"
#include "tvm/ffi/c_api.h"

extern int __tvm_ffi_main(void* self, const TVMFFIAny* args, int32_t num_args, TVMFFIAny* result);

/* The one symbol the object imports: report TVM's argument checks on stderr. */
void TVMFFIErrorSetRaisedFromCStrParts(const char* kind, const char** parts, int32_t n) {
    fprintf(stderr, "%s: ", kind);
    for (int32_t i = 0; i < n; i++) fputs(parts[i] ? parts[i] : "", stderr);
    fputc('\n', stderr);
}

/* Workspace hooks (weak in the object): aligned heap memory, kept per thread for reuse. The
 * model runs image by image and every image allocates the same buffers in the same order
 * (and frees them in reverse): a freed block goes onto its thread's stack of spare blocks
 * and the next request of its size takes it back, usually from the top. malloc and free
 * themselves took ~5,000 aarch64 instructions per lenet image, a fifth of the model. */
#define SPARE_BLOCKS 64
typedef struct { void* ptr; uint64_t nbytes; } Block;
static __thread Block spare[SPARE_BLOCKS];
static __thread int n_spare;
static __thread Block live[SPARE_BLOCKS]; /* sizes of the blocks this thread handed out */
static __thread int n_live;

static void* alloc_workspace(int device_type, int device_id, uint64_t nbytes, int code, int bits) {
    (void)device_type; (void)device_id; (void)code; (void)bits;
    void* p = NULL;
    for (int i = n_spare - 1; i >= 0; i--) {
        if (spare[i].nbytes == nbytes) {
            p = spare[i].ptr;
            spare[i] = spare[--n_spare];
            break;
        }
    }
    if (p == NULL && posix_memalign(&p, 64, nbytes ? nbytes : 1) != 0) return NULL;
    if (n_live < SPARE_BLOCKS) live[n_live++] = (Block){p, nbytes};
    return p;
}
static int free_workspace(int device_type, int device_id, void* ptr) {
    (void)device_type; (void)device_id;
    for (int i = n_live - 1; i >= 0; i--) {
        if (live[i].ptr == ptr) {
            Block b = live[i];
            live[i] = live[--n_live];
            if (n_spare < SPARE_BLOCKS) {
                spare[n_spare++] = b;
                return 0;
            }
            break;
        }
    }
    free(ptr);
    return 0;
}
void* (*__TVMBackendAllocWorkspace)(int, int, uint64_t, int, int) = alloc_workspace;
int (*__TVMBackendFreeWorkspace)(int, int, void*) = free_workspace;

/* Parallel-launch hook (weak in the object): the schedule's parallel loops call it with a
 * lambda that runs task `task_id` of `num_task` slices. Threads are started per launch;
 * the lambdas never call the barrier (no BSP loops in qcompile's schedules). */
typedef struct { void* sync_handle; int32_t num_task; } ParallelEnv;
typedef int (*ParallelLambda)(int task_id, ParallelEnv* env, void* cdata);
typedef struct { ParallelLambda fn; int task_id; ParallelEnv* env; void* cdata; int rc; } Task;

static int num_threads = 1;

static void* run_task(void* arg) {
    Task* t = (Task*)arg;
    t->rc = t->fn(t->task_id, t->env, t->cdata);
    return NULL;
}

static int parallel_launch(ParallelLambda fn, void* cdata, int num_task) {
    int n = num_task > 0 && num_task < num_threads ? num_task : num_threads;
    ParallelEnv env = {NULL, n};
    Task tasks[64];
    pthread_t threads[64];
    if (n > 64) n = env.num_task = 64;
    for (int i = 0; i < n; i++) tasks[i] = (Task){fn, i, &env, cdata, 0};
    for (int i = 1; i < n; i++) pthread_create(&threads[i], NULL, run_task, &tasks[i]);
    run_task(&tasks[0]);
    int rc = tasks[0].rc;
    for (int i = 1; i < n; i++) {
        pthread_join(threads[i], NULL);
        if (tasks[i].rc) rc = tasks[i].rc;
    }
    return rc;
}
int (*__TVMBackendParallelLaunch)(ParallelLambda, void*, int) = parallel_launch;

#define MAX_ARGS 4096

static void must(int ok, const char* what) {
    if (!ok) { fprintf(stderr, "model_runner: %s\n", what); exit(2); }
}

int main(int argc, char** argv) {
    must(argc == 3, "usage: model_runner ARGS.bin OUT.bin");
    const char* threads = getenv("TVM_NUM_THREADS");
    if (threads && atoi(threads) > 0) num_threads = atoi(threads);
    FILE* f = fopen(argv[1], "rb");
    must(f != NULL, "cannot open the arguments file");
    /* a weight layer passes up to six arrays (codes, levels, row tables, multipliers, biases) */
    static DLTensor tensors[MAX_ARGS];
    static TVMFFIAny args[MAX_ARGS];
    int n = 0;
    int32_t head[3];
    while (fread(head, sizeof(int32_t), 3, f) == 3) {
        must(n < MAX_ARGS && head[2] >= 0 && head[2] <= 8, "malformed arguments file");
        DLTensor* t = &tensors[n];
        memset(t, 0, sizeof(*t));
        t->ndim = head[2];
        t->dtype.code = (uint8_t)head[0];
        t->dtype.bits = (uint8_t)head[1];
        t->dtype.lanes = 1;
        t->device.device_type = kDLCPU;
        t->shape = (int64_t*)malloc(sizeof(int64_t) * (t->ndim ? t->ndim : 1));
        must(fread(t->shape, sizeof(int64_t), t->ndim, f) == (size_t)t->ndim, "truncated shape");
        uint64_t count = 1;
        for (int i = 0; i < t->ndim; i++) count *= (uint64_t)t->shape[i];
        uint64_t bytes = count * (uint64_t)(head[1] / 8);
        must(posix_memalign(&t->data, 64, bytes ? bytes : 1) == 0, "out of memory");
        must(fread(t->data, 1, bytes, f) == bytes, "truncated data");
        memset(&args[n], 0, sizeof(args[n]));
        args[n].type_index = kTVMFFIDLTensorPtr;
        args[n].v_ptr = t;
        n++;
    }
    fclose(f);
    must(n >= 2, "need at least an input and an output");
    TVMFFIAny result;
    memset(&result, 0, sizeof(result));
    result.type_index = kTVMFFINone;
    must(__tvm_ffi_main(NULL, args, n, &result) == 0, "the model call failed");
    DLTensor* out = &tensors[n - 1];
    uint64_t count = 1;
    for (int i = 0; i < out->ndim; i++) count *= (uint64_t)out->shape[i];
    FILE* g = fopen(argv[2], "wb");
    must(g != NULL, "cannot open the output file");
    must(fwrite(out->data, out->dtype.bits / 8, count, g) == count, "short write");
    fclose(g);
    return 0;
}
