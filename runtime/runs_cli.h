/* `dconn runs`: recent MLflow runs from the command line (runs_cli.c, lua/dconn/tracker_cli.lua). */
#ifndef DCONN_RUNS_CLI_H
#define DCONN_RUNS_CLI_H

extern const char *const DC_RUNS_HELP;

/* argv[0] is "runs"; returns the exit status (0 ok, 1 tracker failure, 2 usage error). */
int dc_runs_main(int argc, char **argv);

#endif
