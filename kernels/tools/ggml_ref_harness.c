// Test-fixture helper: runs ggml's reference quantizers (`quantize_row_*_ref` from the llama.cpp
// source tree, linked in, not copied) on f32 values read from stdin and writes the blocks to stdout.
// Used by make_ggml_ref_fixtures.py; not part of the build.
//
// Build (GGML = llama.cpp's ggml directory):
//   gcc -O2 -ffp-contract=off -I$GGML/include -I$GGML/src -c $GGML/src/ggml-quants.c -o q.o
//   gcc -O2 -I$GGML/include -I$GGML/src ggml_ref_harness.c q.o -lm -o ggml_ref_harness
// Usage: ggml_ref_harness <ggml type id> <n values> < values.f32 > blocks.bin
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ggml-quants.h"
// Symbols ggml-quants.o refers to but these functions never reach.
void ggml_abort(const char * file, int line, const char * fmt, ...) { fprintf(stderr, "abort %s:%d\n", file, line); exit(1); }
void ggml_log_internal(int level, const char * fmt, ...) {}
int main(int argc, char ** argv) {
    int t = atoi(argv[1]); int n = atoi(argv[2]);
    float * x = malloc(n * 4); fread(x, 4, n, stdin);
    size_t sz; void * y = malloc(n * 4);
    switch (t) {
        case 10: quantize_row_q2_K_ref(x, y, n); sz = n / 256 * 84; break;
        case 11: quantize_row_q3_K_ref(x, y, n); sz = n / 256 * 110; break;
        case 12: quantize_row_q4_K_ref(x, y, n); sz = n / 256 * 144; break;
        case 13: quantize_row_q5_K_ref(x, y, n); sz = n / 256 * 176; break;
        case 14: quantize_row_q6_K_ref(x, y, n); sz = n / 256 * 210; break;
        case 15: quantize_row_q8_K_ref(x, y, n); sz = n / 256 * 292; break;
        case 8: quantize_row_q8_0_ref(x, y, n); sz = n / 32 * 34; break;
        case 9: quantize_row_q8_1_ref(x, y, n); sz = n / 32 * 36; break;
        default: return 2;
    }
    fwrite(y, 1, sz, stdout); return 0;
}
size_t ggml_row_size(enum ggml_type type, int64_t ne) { return 0; }
size_t ggml_type_size(enum ggml_type type) { return 0; }
const char * ggml_type_name(enum ggml_type type) { return ""; }
