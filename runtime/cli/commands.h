/* The commands written in Lua (dconn.cli: predict, place, runs, policy, help, completion). */
#ifndef DCONN_COMMANDS_H
#define DCONN_COMMANDS_H

#include "host.h"

/* Pops the parsed command line (dconn.cli.start's table) and runs
 * require("dconn.cli").execute(parsed) as a task on the host's loop until it ends; frees the
 * host and returns the exit status. name: the command's, for messages. */
int dc_command_run(dc_host *H, const char *name);

#endif
