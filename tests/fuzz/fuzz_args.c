/* fuzz_args.c: libFuzzer target for dptrain train's option parser: the command-line flags,
 * the --layers spec, --config INI files (inih) and saved config.json files (jansson), all
 * through dp_cli_parse_run, the call that train and bench parse a run with (the program's
 * argv and INI reading over the library's dp_run_opts and dp_run_cfg_from_json).
 *
 * The first input byte chooses the form, the rest is the text:
 *   bit 0 clear: the text is the arguments, one per line (at most 64): dptrain train ARGS
 *   bit 0 set:   the text up to a line "--" is an INI file: dptrain train --config FILE,
 *                and the lines after it more arguments (the command line overrides the
 *                file)
 * Whatever the input, the parser returns a status (no crash, no leak, no read past a
 * string); a run it accepts must have sizes and settings the trainer can take. */
#include "cli/cli.h"
#include "dptrain/err.h"
#include "fuzz_util.h"

#include <stdlib.h>
#include <string.h>

enum { MAX_ARGS = 64 };

static char ini_path[4096];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fz_init();
    fz_path(ini_path, sizeof ini_path, "run.ini");
    return 0;
}

/* Splits text (NUL-terminated, modified) at any of seps into at most max words. */
static int split(char *text, const char *seps, char **words, int max)
{
    int n = 0;
    for (char *save = NULL, *w = strtok_r(text, seps, &save); w && n < max;
         w = strtok_r(NULL, seps, &save)) {
        words[n++] = w;
    }
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 1 << 16) {
        return 0;
    }
    char *text = malloc(size);
    char *argv[MAX_ARGS + 4];
    int argc = 0;
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    argv[argc++] = "train";
    if (data[0] & 1) {
        char *sep = strstr(text, "\n--\n");
        size_t ini_len = sep ? (size_t)(sep - text) + 1 : strlen(text);
        fz_write(ini_path, (const uint8_t *)text, ini_len);
        argv[argc++] = "--config";
        argv[argc++] = ini_path;
        if (sep) {
            argc += split(sep + 4, "\n", argv + argc, MAX_ARGS);
        }
    } else {
        argc += split(text, "\n", argv + argc, MAX_ARGS);
    }
    argv[argc] = NULL;
    dp_cli_run run;
    dp_err_clear();
    int rc = fz_note("dp_cli_parse_run", dp_cli_parse_run(argc, argv, "4,3", &run));
    if (rc == DP_OK && !run.help) {
        const dp_model_cfg *mc = &run.run.model;
        FZ_ASSERT(mc->n_layers >= 1 && mc->n_layers <= DP_MAX_LAYERS, "%d layers accepted",
                  mc->n_layers);
        for (int i = 0; i <= mc->n_layers; i++) {
            FZ_ASSERT(mc->sizes[i] >= 1 && mc->sizes[i] <= 1 << 24, "layer size %d accepted",
                      mc->sizes[i]);
        }
        const dp_train_cfg *tc = &run.run.train;
        FZ_ASSERT(tc->epochs >= 0 && tc->accumulate >= 1 && tc->eval_batch >= 1,
                  "epochs %d, accumulate %d, eval batch %d accepted", tc->epochs,
                  tc->accumulate, tc->eval_batch);
        FZ_ASSERT(memchr(run.run.data, '\0', sizeof run.run.data) &&
                      memchr(run.run.out, '\0', sizeof run.run.out) &&
                      memchr(run.layers, '\0', sizeof run.layers),
                  "an unterminated string");
    }
    free(text);
    return 0;
}
