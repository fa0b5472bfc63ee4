/*
 * The process lifecycle around the host: calls into the Lua driver (lua/dconn/agent/init.lua), the
 * loop, signals (SIGINT/SIGTERM stop gracefully, SIGHUP reloads), reload when the policy file
 * changes, and the exit status.
 */
#ifndef DCONN_AGENT_H
#define DCONN_AGENT_H

#include <stdbool.h>

#include "host.h"

#define DC_EXIT_OK 0
#define DC_EXIT_FAILURE 1
#define DC_EXIT_USAGE 2

typedef struct dc_agent_options {
  bool keep_alive;   /* an agent lives until stopped; a script while it has work */
  bool reloadable;   /* SIGHUP reloads the policy */
  double grace;      /* seconds running jobs get to finish after SIGINT/SIGTERM */
  double stop_after; /* > 0: stop gracefully after this many clock seconds */
  const char *watch_path; /* reloadable: also reload when this file changes (NULL: never) */
} dc_agent_options;

/* Spawns require("dconn.agent")[fn](args...) as the main task, runs the loop until the work is
 * done or the agent is stopped, and returns the exit status. The driver function returns an
 * exit status to end the process, or nothing to keep running. */
int dc_agent_main(dc_host *H, const dc_agent_options *opts, const char *fn, int argc, const char *const *argv);

#endif
