/*
 * smbconf.h -- `spacectl smbconf` (tools/smbconf.c): smb.conf shares for a
 * pool's volumes, with DFS referrals to each volume's owner.
 */
#ifndef SPACEFS_TOOLS_SMBCONF_H
#define SPACEFS_TOOLS_SMBCONF_H

/* Runs the subcommand on argv (argv[0] is "smbconf"); returns the exit
 * status: 0, 1 (failed), 2 (usage). */
int smbconf_main(int argc, char **argv);

#endif /* SPACEFS_TOOLS_SMBCONF_H */
