// llama.cpp's own multimodal path, for checking corral's vision answers: the flow of
// llama-mtmd-cli (mtmd_tokenize, then mtmd_helper_eval_chunks into one sequence, then greedy
// decoding), without its chat template and argument parser, linked against the very
// libllama/libmtmd that llama-cpp-python installed (so the kernels are the same binaries).
//
// usage: mtmd_reference MODEL PROJECTOR PROMPT_FILE N_PREDICT IMAGE...
//   PROMPT_FILE holds the exact prompt text, with mtmd's default marker (<__media__>) where
//   each image goes (BOS added as the model's vocabulary says). Prints the generated token
//   ids, space-separated, on one line of stdout; everything else goes to stderr.
#include "llama.h"
#include "mtmd.h"
#include "mtmd-helper.h"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

static void quiet(enum ggml_log_level level, const char * text, void *) {
    if (level >= GGML_LOG_LEVEL_WARN) {
        fputs(text, stderr);
    }
}

int main(int argc, char ** argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: %s MODEL PROJECTOR PROMPT_FILE N_PREDICT IMAGE...\n", argv[0]);
        return 2;
    }
    llama_log_set(quiet, nullptr);
    mtmd_helper_log_set(quiet, nullptr);
    llama_backend_init();

    llama_model * model = llama_model_load_from_file(argv[1], llama_model_default_params());
    if (!model) {
        fprintf(stderr, "cannot load %s\n", argv[1]);
        return 1;
    }
    llama_context_params cparams = llama_context_default_params();
    cparams.n_ctx = 1024;
    cparams.n_batch = 512;
    cparams.n_ubatch = 512;
    llama_context * lctx = llama_init_from_model(model, cparams);
    const llama_vocab * vocab = llama_model_get_vocab(model);

    mtmd_context_params mparams = mtmd_context_params_default();
    mparams.use_gpu = false;
    mparams.print_timings = false;
    mparams.warmup = false;
    mtmd_context * mctx = mtmd_init_from_file(argv[2], model, mparams);
    if (!mctx) {
        fprintf(stderr, "cannot load projector %s\n", argv[2]);
        return 1;
    }

    std::ifstream file(argv[3], std::ios::binary);
    std::stringstream text;
    text << file.rdbuf();
    const std::string prompt = text.str();
    const int n_predict = atoi(argv[4]);

    std::vector<mtmd_bitmap *> bitmaps;
    for (int i = 5; i < argc; i++) {
        mtmd_helper_bitmap_wrapper loaded =
            mtmd_helper_bitmap_init_from_file(mctx, argv[i], false, mtmd_helper_init_opt_default());
        if (!loaded.bitmap) {
            fprintf(stderr, "cannot load image %s\n", argv[i]);
            return 1;
        }
        bitmaps.push_back(loaded.bitmap);
    }

    mtmd_input_text input = {prompt.c_str(), prompt.size(), true, true};
    mtmd_input_chunks * chunks = mtmd_input_chunks_init();
    std::vector<const mtmd_bitmap *> pointers(bitmaps.begin(), bitmaps.end());
    if (mtmd_tokenize(mctx, chunks, &input, pointers.data(), pointers.size()) != 0) {
        fprintf(stderr, "mtmd_tokenize failed\n");
        return 1;
    }
    llama_pos n_past = 0;
    if (mtmd_helper_eval_chunks(mctx, lctx, chunks, 0, 0, cparams.n_batch, true, &n_past) != 0) {
        fprintf(stderr, "mtmd_helper_eval_chunks failed\n");
        return 1;
    }

    const int n_vocab = llama_vocab_n_tokens(vocab);
    std::string out;
    for (int i = 0; i < n_predict; i++) {
        const float * logits = llama_get_logits_ith(lctx, -1);
        llama_token best = 0;
        for (llama_token t = 1; t < n_vocab; t++) {
            if (logits[t] > logits[best]) {
                best = t;
            }
        }
        if (llama_vocab_is_eog(vocab, best)) {
            break;
        }
        out += (out.empty() ? "" : " ") + std::to_string(best);
        llama_batch batch = llama_batch_get_one(&best, 1);
        // llama_batch_get_one leaves positions to the context: they follow n_past
        if (llama_decode(lctx, batch) != 0) {
            fprintf(stderr, "llama_decode failed\n");
            return 1;
        }
        n_past++;
    }
    printf("%s\n", out.c_str());

    mtmd_input_chunks_free(chunks);
    for (mtmd_bitmap * bitmap : bitmaps) {
        mtmd_bitmap_free(bitmap);
    }
    mtmd_free(mctx);
    llama_free(lctx);
    llama_model_free(model);
    return 0;
}
