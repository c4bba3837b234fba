/* Preloaded into a baseline's process (LD_PRELOAD) so that it sees an AVX2 CPU, as on the
 * machine x86-64-v3 stands for: every CPUID instruction the process executes faults (Linux's
 * CPUID faulting, ARCH_SET_CPUID) and this library answers it with the real values less the
 * AVX-512, AMX and AVX-VNNI bits. onnxruntime's MLAS, oneDNN, MKL, OpenBLAS and numpy choose
 * their kernels from CPUID, so they then run their AVX2/FMA kernels; the dynamic loader has
 * read CPUID before this library loads (glibc's string functions keep their choice).
 *
 * Built by bench/cpu_level.py; `qcompile_cpuid_leaf7_ebx()` lets the process check that the
 * masking is in force (it executes CPUID itself). */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

static int set_cpuid(int enabled) { return (int)syscall(SYS_arch_prctl, ARCH_SET_CPUID, enabled); }

static void cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4]) {
    __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub));
}

/* The bits an x86-64-v3 CPU (Haswell, Zen 2/3) does not have. */
static void mask(uint32_t leaf, uint32_t sub, uint32_t r[4]) {
    if (leaf == 7 && sub == 0) {
        /* AVX512F, DQ, IFMA, PF, ER, CD, BW, VL */
        r[1] &= ~((1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) | (1u << 27) | (1u << 28) |
                  (1u << 30) | (1u << 31));
        /* AVX512_VBMI, VBMI2, VNNI, BITALG, VPOPCNTDQ */
        r[2] &= ~((1u << 1) | (1u << 6) | (1u << 11) | (1u << 12) | (1u << 14));
        /* AVX512_4VNNIW, 4FMAPS, VP2INTERSECT, AMX-BF16, AVX512_FP16, AMX-TILE, AMX-INT8 */
        r[3] &= ~((1u << 2) | (1u << 3) | (1u << 8) | (1u << 22) | (1u << 23) | (1u << 24) |
                  (1u << 25));
    } else if (leaf == 7 && sub == 1) {
        r[0] &= ~((1u << 4) | (1u << 5) | (1u << 23)); /* AVX-VNNI, AVX512_BF16, AVX-IFMA */
    }
}

static void on_fault(int sig, siginfo_t *info, void *ctx_) {
    ucontext_t *ctx = ctx_;
    greg_t *g = ctx->uc_mcontext.gregs;
    const unsigned char *pc = (const unsigned char *)g[REG_RIP];
    (void)info;
    if (pc[0] != 0x0f || pc[1] != 0xa2) { /* a real segfault: die of it */
        signal(sig, SIG_DFL);
        return;
    }
    uint32_t r[4];
    uint32_t leaf = (uint32_t)g[REG_RAX], sub = (uint32_t)g[REG_RCX];
    set_cpuid(1);
    cpuid(leaf, sub, r);
    set_cpuid(0);
    mask(leaf, sub, r);
    g[REG_RAX] = r[0];
    g[REG_RBX] = r[1];
    g[REG_RCX] = r[2];
    g[REG_RDX] = r[3];
    g[REG_RIP] += 2;
}

uint32_t qcompile_cpuid_leaf7_ebx(void) {
    uint32_t r[4];
    cpuid(7, 0, r);
    return r[1];
}

__attribute__((constructor)) static void install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, 0) == 0)
        set_cpuid(0); /* threads created later inherit it */
}
