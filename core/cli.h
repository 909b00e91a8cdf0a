/* cli.h: the project commands of the command line: `sluice new`, `sluice routes`, `sluice migrate`. */
#ifndef SLUICE_CLI_H
#define SLUICE_CLI_H

/* Runs cmd when it is one of these (argv: the arguments after it, --config already taken out);
 * returns its exit status, or -1 when cmd is not a project command. */
int cli_main(const char *cmd, const char *config_path, int argc, char **argv);

#endif
