# sockwarden example policy for an nginx host.
#
# Who may do what:
#   - the web server's user (uid in data.sockwarden.config.web_uids; 33 is
#     www-data on Debian) may run a short allow-list of tools, each with its
#     own limits and Landlock view;
#   - shells and interpreters asked to run inline code (sh -c, python3 -c,
#     perl -e, node -e, ...) are denied with a message saying so;
#   - admins (uid in admin_uids; 0 is root) get an "admin" profile: allowed,
#     argv not checked, every reason marked audit-only;
#   - everyone else is denied.
#
# Identity is input.peer.uid, which the kernel vouches for (SO_PEERCRED).
# input.peer.user / .group / .exe are looked up for convenience and only
# ever appear in messages, never in decisions.
#
# Programs are identified by input.exe: argv[0] resolved by the server on
# ITS PATH; the server executes exactly that file.
#
# Settings that differ between hosts live in data.json
# (data.sockwarden.config). Tests: policy_test.rego; run them with
#   sockwarden policy test examples/policy
#
# How it is built: a web request is allowed only when every condition of
# the allow rule holds (web_allowed). When it does not, the deny rules
# (denials) only explain why, for the message and the audit log; if none
# explains it, the request is still denied, with a generic message. So a
# missing or wrong explanation can never let a request through, and an
# allowed request (the common case, evaluated for every request) evaluates
# only the allow conditions: about 40 expressions, tens of microseconds.
package sockwarden

cfg := data.sockwarden.config

default decision := {
	"allow": false,
	"message": "request denied by policy",
	"reasons": ["no rule matched"],
}

decision := admin_decision if {
	is_admin
} else := allow_decision if {
	web_allowed
} else := deny_decision if {
	is_web
} else := {
	"allow": false,
	"message": sprintf("uid %d is not permitted to use this service", [input.peer.uid]),
	"reasons": [sprintf("caller uid %d (%s) is neither a web uid %v nor an admin uid %v", [input.peer.uid, peer_name, cfg.web_uids, cfg.admin_uids])],
}

is_admin if input.peer.uid in cfg.admin_uids

is_web if input.peer.uid in cfg.web_uids

peer_name := object.get(input.peer, "user", "?")

# ------------------------------------------------------------ allow rule

# A web request is allowed when the caller is a web uid, the argv is sane,
# the program is an allow-listed tool, and the tool's argument rules find
# nothing wrong.
web_allowed if {
	is_web
	argv_ok
	tool
	count(argument_denials) == 0
}

default argv0 := ""

argv0 := input.argv[0]

all_args := concat("", input.argv)

argv_ok if {
	count(input.argv) > 0
	count(input.argv) <= cfg.max_args
	all := concat("", input.argv)
	count(all) <= cfg.max_argv_bytes
	not contains(all, "\u0000")
}

# tool is the allow-listed name when input.exe is exactly <bin_dir>/<name>
# and argv[0] names it (the bare name or the exe itself: a multi-call
# binary must not be entered under another name). The regex splits
# "/usr/bin/uname" into "/usr/bin" and "uname".
tool := name if {
	[[_, dir, name]] := regex.find_all_string_submatch_n(`^(.*)/([^/]+)$`, input.exe, 1)
	tools[name]
	dir in cfg.bin_dirs
	input.argv[0] in {name, input.exe}
}

# ------------------------------------------------------------- allow-list

# The allow-list: tool name -> profile. A profile overrides the base profile
# (web_base) key by key: object.union merges nested objects (rlimits, env)
# and replaces arrays (landlock.ro) whole. Each entry is its own rule, so a
# request evaluates only the entry of its tool.
#
# Never add a shell or an interpreter: they run whatever code they are
# given (a test checks this).
tools["true"] := {}

tools["false"] := {}

tools["echo"] := {}

tools["uname"] := {}

tools["date"] := {}

tools["sleep"] := {
	"timeout": "65s",
	"rlimits": {"cpu": 1},
}

# Tools that read files see the content roots (read-only) and start in the
# first one; their file arguments are checked (argument_denials).
tools["cat"] := file_tool

tools["head"] := file_tool

tools["wc"] := file_tool

tools["ls"] := file_tool

tools["sha256sum"] := object.union(file_tool, {
	"timeout": "30s",
	"rlimits": {"cpu": 20},
})

file_tool := {
	"landlock": {"ro": array.concat(system_ro, cfg.content_roots)},
	"cwd": cfg.content_roots[0],
	# They also filter request bodies (cat, wc -c from stdin).
	"max_stdin_bytes": 16777216,
	"max_output_bytes": 16777216,
}

file_tools := {"cat", "head", "wc", "sha256sum", "ls"}

# ImageMagick, stdin to stdout only (see convert_arg_ok). Big images need
# CPU and memory; an address-space limit is safe for this C program.
tools["convert"] := {
	"timeout": "60s",
	"rlimits": {
		"cpu": 30,
		"as": 1073741824, # 1 GiB
		"fsize": 104857600, # 100 MiB of temporary files
	},
	"landlock": {
		"ro": array.concat(system_ro, ["/etc/ImageMagick-6"]), # Debian's ImageMagick 6
	},
	# Its temporary files go to a private directory of the request's own
	# (TMPDIR), removed with it.
	"tmpdir": true,
	"max_stdin_bytes": 20971520,
	"max_output_bytes": 20971520,
}

# ------------------------------------------------------------ web profile

# The base profile of every allowed web request.
#
# No "as" (RLIMIT_AS, address space) here: it breaks V8 (node), the JVM and
# WebAssembly runtimes, which reserve large virtual ranges up front and die
# at start. Set it only per tool, for programs known to cope (convert).
web_base := {
	"allow": true,
	"reasons": ["web profile: allow-listed tool (see exe)"],
	# A uid of the request's own ([sandbox] dynamic_uids): requests cannot
	# signal, trace or read each other, and RLIMIT_NPROC, which counts every
	# process of the uid on the host, counts only the request's.
	"run_as": {"dynamic": true},
	"rlimits": {
		"cpu": 5, # seconds of CPU
		"core": 0, # no core dumps
		"fsize": 1048576, # 1 MiB per written file
		"nofile": 64,
		"nproc": 64,
	},
	# None of these tools needs a network: an empty network namespace, not
	# even loopback. (A tool that does would set "network": "host" and its
	# ports in landlock.connect_tcp.)
	"network": "none",
	"landlock": {
		# What a dynamically linked tool needs to start. Landlock rules need
		# existing paths: drop /lib64 where it does not exist (arm64).
		"ro": ["/usr", "/lib", "/lib64", "/bin", "/etc/ld.so.cache", "/etc/localtime"],
		"rw": ["/dev/null"],
		"connect_tcp": [], # no outgoing TCP
		"bind_tcp": [], # no listening
	},
	"timeout": "10s",
	"kill_timeout": "2s",
	"env": {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
	"cwd": "/",
	"umask": "0077",
	"max_output_bytes": 1048576,
	"max_stdin_bytes": 1048576,
}

system_ro := web_base.landlock.ro

# The decision: the base profile with the tool's profile on top. (web_base
# is a constant: anything computed per request in it would cost time on
# every request.)
allow_decision := object.union(web_base, tools[tool])

# ------------------------------------------------------ argument rules

# argument_denials are the per-tool argument rules, part of the allow rule.
argument_denials contains d if {
	file_tools[tool]
	some d in file_argument_denials
}

argument_denials contains d if {
	tool == "convert"
	some d in convert_argument_denials
}

has_dotdot(s) if regex.match(`(^|/)\.\.(/|$)`, s)

# The path an argument names, if any: a non-option argument, or the value
# of --opt=value (so that wc --files0-from=/etc/x is checked too).
arg_path(a) := a if not startswith(a, "-")

else := substring(a, indexof(a, "=") + 1, -1) if {
	startswith(a, "-")
	contains(a, "=")
}

under_content_root(p) if {
	some root in cfg.content_roots
	p == root
}

under_content_root(p) if {
	some root in cfg.content_roots
	startswith(p, concat("", [root, "/"]))
}

file_argument_denials contains {"prio": 5, "msg": sprintf("argument %d: \"..\" is not allowed in paths", [i])} if {
	contains(all_args, "..")
	some i, a in input.argv
	i > 0
	has_dotdot(arg_path(a))
}

file_argument_denials contains {"prio": 5, "msg": sprintf("argument %d: files must be under %s", [i, concat(" or ", cfg.content_roots)])} if {
	some i, a in input.argv
	i > 0
	p := arg_path(a)
	startswith(p, "/")
	not under_content_root(p)
}

# convert: stdin to stdout only, with a small set of options. ImageMagick
# coders can read arbitrary files and URLs (text:/etc/passwd, url:, msl:,
# @file), so every argument is allow-listed.
convert_options := {
	"-resize", "-thumbnail", "-strip", "-quality", "-auto-orient", "-flatten",
	"-gravity", "-extent", "-crop", "+repage", "-background", "-rotate",
}

convert_arg_ok(a) if convert_options[a]

# An input or output: FORMAT:- (stdin/stdout).
convert_arg_ok(a) if regex.match(`^(png|jpe?g|gif|webp):-$`, a)

# A geometry, quality or angle: 100x100, 50%, 85, 90.
convert_arg_ok(a) if regex.match(`^[0-9]{1,5}(x[0-9]{1,5})?[%!<>^]?$`, a)

# A gravity or color name.
convert_arg_ok(a) if a in {"center", "north", "south", "east", "west", "white", "black", "none", "transparent"}

convert_argument_denials contains {"prio": 5, "msg": sprintf("convert: argument %d is not allowed: %s", [i, short(a)])} if {
	some i, a in input.argv
	i > 0
	not convert_arg_ok(a)
}

# ----------------------------------------------- why a request is denied

# denials hold {prio, msg} explaining a denied web request. The client sees
# the message of the lowest prio, the audit log gets them all. They are
# evaluated only for requests the allow rule refused.
deny_decision := {
	"allow": false,
	"message": messages[0],
	"reasons": messages,
} if {
	count(messages) > 0
} else := {
	"allow": false,
	"message": "request denied by policy",
	"reasons": ["web request not allowed, and no deny rule says why"],
}

messages := [d.msg | some p in [1, 2, 3, 4, 5]; some d in denials; d.prio == p]

basename(path) := regex.replace(path, `^.*/`, "")

short(s) := s if count(s) <= 64

else := concat("", [substring(s, 0, 64), "..."])

# 1: malformed or abusive argv (the first problem found).
denials contains {"prio": 1, "msg": argv_problem}

argv_problem := "empty argv" if {
	count(input.argv) == 0
} else := sprintf("too many arguments (%d > %d)", [count(input.argv), cfg.max_args]) if {
	count(input.argv) > cfg.max_args
} else := sprintf("arguments longer than %d bytes in total", [cfg.max_argv_bytes]) if {
	count(all_args) > cfg.max_argv_bytes
} else := "an argument contains a NUL byte" if {
	contains(all_args, "\u0000")
}

# 2: shells and interpreters running inline code, judged on argv[0] and on
# the resolved exe (python3 may resolve to python3.12; busybox applets).
interpreters := {
	"sh", "bash", "dash", "zsh", "ksh", "mksh", "csh", "tcsh", "fish", "ash", "busybox",
	"python", "python2", "python3", "pypy", "pypy3", "perl", "ruby", "irb",
	"node", "nodejs", "deno", "bun", "lua", "luajit", "php", "tclsh", "wish",
	"awk", "gawk", "mawk", "nawk", "osascript", "pwsh", "R", "Rscript", "julia",
}

# Versioned names: python3.12, perl5.36, lua5.4, php8.2, ruby3.1, ...
is_interpreter(name) if interpreters[name]

is_interpreter(name) if regex.match(`^(python|pypy|perl|ruby|lua|luajit|php|node|tclsh|wish)[0-9][0-9.]*$`, name)

# -c, -e, -E, -r and clusters like -ec, -xc, -lc; long forms.
inline_flag(a) if regex.match(`^-[A-Za-z]*[ceEr][A-Za-z]*$`, a)

inline_flag(a) if a in {"--eval", "--print", "--command", "--exec", "--execute", "--run"}

denials contains {
	"prio": 2,
	"msg": sprintf("shells and interpreters may not run inline code (%s %s)", [short(name), short(flag)]),
} if {
	some name in {basename(argv0), basename(input.exe)}
	is_interpreter(name)
	some flag in array.slice(input.argv, 1, count(input.argv))
	inline_flag(flag)
}

# 3: where the program is (the first problem found).
denials contains {"prio": 3, "msg": program_problem}

program_problem := sprintf("program not found on the server: %s", [short(argv0)]) if {
	input.exe == ""
	count(input.argv) > 0
} else := "argv[0] must not contain \"..\"" if {
	has_dotdot(argv0)
} else := sprintf("argv[0] %s does not name the program %s", [short(argv0), input.exe]) if {
	argv0 != input.exe
	not endswith(input.exe, concat("", ["/", argv0]))
}

# 4: not on the allow-list (outside bin_dirs, or not a known tool).
denials contains {"prio": 4, "msg": sprintf("program not allowed: %s", [short(input.exe)])} if {
	not tool
	input.exe != ""
	not program_problem
}

# 5: the tool's argument rules.
denials contains d if some d in argument_denials

# ------------------------------------------------------------------ admin

admin_decision := {
	"allow": true,
	"reasons": [
		sprintf("audit-only: admin profile for uid %d (%s)", [input.peer.uid, peer_name]),
		"audit-only: argv not checked against the allow-list",
	],
	"rlimits": {"core": 0},
	"timeout": "300s",
	"kill_timeout": "5s",
	"umask": "0022",
}
