/* `dconn predict`: batch inference from the command line (model_cli.c, lua/dconn/model.lua). */
#ifndef DCONN_MODEL_CLI_H
#define DCONN_MODEL_CLI_H

extern const char *const DC_PREDICT_HELP;

/* argv[0] is "predict"; returns the exit status (0 ok, 1 runtime failure, 2 bad arguments or
 * a bad spec, weights or input). */
int dc_predict_main(int argc, char **argv);

#endif
