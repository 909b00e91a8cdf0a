/* testing.h: `sluice test` (the spec runner on a live single-worker runtime with a virtual clock) and `sluice lua`. */
#ifndef SLUICE_TESTING_H
#define SLUICE_TESTING_H

/* Runs spec files against config_path's app; returns the exit status (0, 1 failures, 2 load errors). */
int testing_main(const char *config_path, int argc, char **argv);
/* Loads the app like `sluice test` and runs require(module)(args) as a task on the loop;
 * returns its number result (used by `sluice migrate`). */
int testing_exec(const char *config_path, const char *module, int argc, char **argv);
/* The same with appstate_new flags added to test mode (APPSTATE_NO_SCRIPTS: config.lua only). */
int testing_exec_flags(const char *config_path, const char *module, int flags, int argc, char **argv);
/* Runs a Lua file with sluice's embedded modules on the path; returns its exit status. */
int testing_run_script(const char *path, int argc, char **argv);

#endif
