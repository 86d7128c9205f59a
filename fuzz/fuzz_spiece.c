/* libFuzzer target: the T5 tokenizer's spiece.model reader (protobuf ModelProto, pieces,
 * precompiled charsmap) on arbitrary bytes; a model that loads is then used to encode a
 * few texts that reach the charsmap trie, user-defined symbols, unknown runs and special
 * tokens, so a corrupt trie or string table is exercised too. */
#include <stdint.h>

#include "base/alloc.h"
#include "models/t5_tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *const texts[] = {
        "hello world",
        "  \xef\xbc\xa1\xef\xac\x81\xe3\x80\x80 caf\xc3\xa9 \xe4\xb8\xad\xe6\x96\x87 <sep> ",
        "<extra_id_0> a </s> b <pad><unk>",
        "",
    };
    imgd_t5_tok *t = NULL;
    if (imgd_t5_tok_load_mem(data, size, "fuzz", 100, &t) != IMGD_OK) return 0;
    for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
        int32_t *ids = NULL;
        char    *pcs = NULL;
        size_t   n   = 0;
        if (imgd_t5_tok_sp_encode(t, texts[i], &ids, &pcs, &n) == IMGD_OK) {
            imgd_free(ids);
            imgd_free(pcs);
        }
        int32_t row[16];
        (void)imgd_t5_tok_encode_padded(t, texts[i], 16, row, NULL);
    }
    imgd_t5_tok_free(t);
    return 0;
}
