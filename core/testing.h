/* testing.h: `sluice test` (the spec runner on a live single-worker runtime with a virtual clock) and `sluice lua`. */
#ifndef SLUICE_TESTING_H
#define SLUICE_TESTING_H

/* Runs spec files against config_path's app; returns the exit status (0, 1 failures, 2 nothing
 * ran or a load error). config_given = 0: a missing ./config.lua means an app without scripts. */
int testing_main(const char *config_path, int config_given, int argc, char **argv);
/* Loads the app like `sluice test` and runs require(module)(args) as a task on the loop;
 * returns its number result (used by `sluice migrate`). plain: no watchdog, JIT on, log to stderr. */
int testing_exec(const char *config_path, int config_given, const char *module, int plain, int argc, char **argv);
/* `sluice lua [FILE args...]`: runs FILE (or a REPL) on a live test instance of the app. */
int testing_lua(const char *config_path, int config_given, int argc, char **argv);
/* As testing_exec with the named config and appstate_new flags added to test mode
 * (APPSTATE_NO_SCRIPTS: config.lua only; `sluice migrate`). */
int testing_exec_flags(const char *config_path, const char *module, int flags, int argc, char **argv);

#endif
