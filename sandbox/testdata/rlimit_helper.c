/*
 * rlimit_helper: candidate (b) of the rlimit mechanism, kept only for
 * BenchmarkSpawn/candidate-c-helper. It sets resource limits on itself
 * and execs the target:
 *
 *   rlimit_helper RES CUR MAX [RES CUR MAX ...] -- PATH ARGV0 [ARG ...]
 *
 * Built with: cc -static -O2 -o rlimit_helper rlimit_helper.c
 */
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

extern char **environ;

int main(int argc, char **argv)
{
	int i = 1;
	while (i < argc && strcmp(argv[i], "--") != 0) {
		struct rlimit rl;
		if (i + 2 >= argc)
			return 125;
		rl.rlim_cur = strtoull(argv[i + 1], NULL, 10);
		rl.rlim_max = strtoull(argv[i + 2], NULL, 10);
		if (setrlimit(atoi(argv[i]), &rl) != 0)
			return 125;
		i += 3;
	}
	if (i + 2 >= argc)
		return 125;
	execve(argv[i + 1], argv + i + 2, environ);
	return 127;
}
