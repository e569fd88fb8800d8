/*
 * A QEMU TCG plugin (plugin API version 1, QEMU 7.2) that counts how often every translated block
 * runs, for benchmarks/arm_cost.py. Built by that script with gcc; loaded with
 *     qemu-aarch64 -plugin ./qemu_block_counts.so,out=counts.tsv ...
 * At exit it writes one line per block that ran: execution count, instruction count and the
 * block's machine code in hex. The counts are exact and repeatable (one guest thread); the code
 * lets arm_cost.py disassemble every hot block and model its cycles with llvm-mca.
 *
 * The few declarations of QEMU's plugin API we use are written out here (Debian's qemu-user ships
 * no header); they match qemu-plugin.h of QEMU 7.2 (QEMU_PLUGIN_VERSION 1).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
typedef struct {
    const char *target_name;
    struct {
        int min;
        int cur;
    } version;
    bool system_emulation;
    union {
        struct {
            int smp_vcpus;
            int max_vcpus;
        } system;
    };
} qemu_info_t;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op,
                                              void *ptr, uint64_t imm);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb,
                                    void *userdata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
const void *qemu_plugin_insn_data(const struct qemu_plugin_insn *insn);
size_t qemu_plugin_insn_size(const struct qemu_plugin_insn *insn);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

/* One translated block: QEMU may translate the same code again (after a flush), so blocks are
 * kept by address and code and a retranslation adds to the same counter. */
struct block {
    uint64_t vaddr;
    uint64_t executions; /* incremented inline by the translated code */
    uint32_t n_insns;
    uint32_t n_bytes;
    unsigned char *code;
    struct block *next;
};

#define BUCKETS (1u << 20)
static struct block **table;
static char out_path[4096] = "qemu_block_counts.tsv";

static struct block *find_or_add(uint64_t vaddr, uint32_t n_insns, const unsigned char *code,
                                 uint32_t n_bytes) {
    uint32_t bucket = (uint32_t)((vaddr >> 2) * 2654435761u) & (BUCKETS - 1);
    for (struct block *b = table[bucket]; b; b = b->next) {
        if (b->vaddr == vaddr && b->n_bytes == n_bytes && memcmp(b->code, code, n_bytes) == 0) {
            return b;
        }
    }
    struct block *b = calloc(1, sizeof *b);
    b->vaddr = vaddr;
    b->n_insns = n_insns;
    b->n_bytes = n_bytes;
    b->code = malloc(n_bytes);
    memcpy(b->code, code, n_bytes);
    b->next = table[bucket];
    table[bucket] = b;
    return b;
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    size_t n = qemu_plugin_tb_n_insns(tb);
    unsigned char code[4096];
    uint32_t n_bytes = 0;
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        size_t size = qemu_plugin_insn_size(insn);
        if (n_bytes + size > sizeof code) {
            break; /* longer than any block QEMU makes; counted, code truncated */
        }
        memcpy(code + n_bytes, qemu_plugin_insn_data(insn), size);
        n_bytes += (uint32_t)size;
    }
    struct block *b = find_or_add(qemu_plugin_tb_vaddr(tb), (uint32_t)n, code, n_bytes);
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &b->executions, 1);
}

static void write_counts(qemu_plugin_id_t id, void *userdata) {
    FILE *out = fopen(out_path, "w");
    if (!out) {
        fprintf(stderr, "qemu_block_counts: cannot write %s\n", out_path);
        return;
    }
    for (uint32_t i = 0; i < BUCKETS; i++) {
        for (struct block *b = table[i]; b; b = b->next) {
            if (b->executions == 0) {
                continue;
            }
            fprintf(out, "%llu\t%u\t", (unsigned long long)b->executions, b->n_insns);
            for (uint32_t k = 0; k < b->n_bytes; k++) {
                fprintf(out, "%02x", b->code[k]);
            }
            fputc('\n', out);
        }
    }
    fclose(out);
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id,
                                                               const qemu_info_t *info, int argc,
                                                               char **argv) {
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "out=", 4) == 0) {
            snprintf(out_path, sizeof out_path, "%s", argv[i] + 4);
        }
    }
    table = calloc(BUCKETS, sizeof *table);
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, write_counts, NULL);
    return 0;
}
