# Unit tests for policy.rego. Run: sockwarden policy test examples/policy
# (or: opa test examples/policy). Add -v to see every test.
package sockwarden_test

import data.sockwarden

# ------------------------------------------------------------------ helpers

# req is a request from uid with argv, argv[0] resolved by the server to exe.
req(uid, argv, exe) := {
	"argv": argv,
	"exe": exe,
	"peer": {"pid": 4242, "uid": uid, "gid": uid, "user": "someone", "exe": "/usr/sbin/nginx"},
	"socket": "/run/sockwarden/exec.sock",
	"request_id": "01JTEST",
	"time": "2026-11-21T10:00:00Z",
}

# web is a request from www-data (uid 33 in data.json).
web(argv, exe) := req(33, argv, exe)

decide(input_doc) := d if {
	d := sockwarden.decision with input as input_doc
}

allowed(input_doc) if decide(input_doc).allow

denied_with(input_doc, text) if {
	d := decide(input_doc)
	d.allow == false
	contains(d.message, text)
}

known_keys := {
	"allow", "message", "reasons", "run_as", "rlimits", "landlock", "timeout",
	"kill_timeout", "env", "cwd", "umask", "max_output_bytes", "max_stdin_bytes",
	"seccomp", "network", "ipc", "tmpdir",
}

# ------------------------------------------------------------------- allow

test_allow_uname if {
	d := decide(web(["uname", "-a"], "/usr/bin/uname"))
	d.allow
	d.reasons == ["web profile: allow-listed tool (see exe)"]
	d.run_as == {"dynamic": true}
	d.network == "none"
	not d.tmpdir
	not d.seccomp # the default profile
	d.rlimits == {"cpu": 5, "core": 0, "fsize": 1048576, "nofile": 64, "nproc": 64}
	d.landlock.rw == ["/dev/null"]
	"/usr" in d.landlock.ro
	d.landlock.connect_tcp == []
	d.landlock.bind_tcp == []
	d.timeout == "10s"
	d.env == {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
	d.umask == "0077"
}

test_allow_simple_tools_in_every_bin_dir if {
	every name in ["true", "false", "echo", "uname", "date", "sleep"] {
		every dir in ["/usr/bin", "/bin"] {
			allowed(web([name], concat("/", [dir, name])))
		}
	}
}

test_allow_absolute_argv0 if {
	allowed(web(["/usr/bin/date", "+%s"], "/usr/bin/date"))
}

test_no_address_space_limit_by_default if {
	every name in ["true", "echo", "uname", "date", "sleep", "cat", "head", "wc", "ls", "sha256sum"] {
		d := decide(web([name], concat("/", ["/usr/bin", name])))
		d.allow
		not d.rlimits.as
	}
}

test_decisions_use_only_known_keys if {
	every r in [
		web(["uname"], "/usr/bin/uname"),
		web(["cat", "index.html"], "/usr/bin/cat"),
		web(["convert", "png:-", "jpg:-"], "/usr/bin/convert"),
		web(["rm", "-rf", "/"], "/usr/bin/rm"),
		req(0, ["id"], "/usr/bin/id"),
		req(1000, ["id"], "/usr/bin/id"),
	] {
		d := decide(r)
		every k, _ in d {
			k in known_keys
		}
	}
}

# ------------------------------------------------------- per-tool profiles

test_sleep_profile_overrides_only_its_keys if {
	d := decide(web(["sleep", "60"], "/usr/bin/sleep"))
	d.allow
	d.timeout == "65s"
	d.rlimits.cpu == 1
	d.rlimits.nofile == 64 # merged from the base profile
	d.rlimits.core == 0
}

test_file_tools_see_content_roots if {
	every name in ["cat", "head", "wc", "ls", "sha256sum"] {
		d := decide(web([name, "/var/www/html/index.html"], concat("/", ["/usr/bin", name])))
		d.allow
		"/var/www" in d.landlock.ro
		"/usr" in d.landlock.ro
		d.cwd == "/var/www"
		d.max_stdin_bytes == 16777216
	}
}

test_non_file_tools_do_not_see_content_roots if {
	d := decide(web(["uname"], "/usr/bin/uname"))
	not "/var/www" in d.landlock.ro
	d.cwd == "/"
}

test_sha256sum_gets_more_cpu if {
	d := decide(web(["sha256sum", "big.iso"], "/usr/bin/sha256sum"))
	d.allow
	d.rlimits.cpu == 20
	d.timeout == "30s"
}

test_relative_file_args_allowed if {
	allowed(web(["head", "-n", "5", "logs/access.log"], "/usr/bin/head"))
	allowed(web(["wc", "-l", "./index.html"], "/usr/bin/wc"))
	allowed(web(["ls", "-la"], "/usr/bin/ls"))
}

test_convert_stdin_to_stdout if {
	d := decide(web(["convert", "png:-", "-resize", "100x100", "-strip", "-quality", "85", "jpg:-"], "/usr/bin/convert"))
	d.allow
	d.rlimits.as == 1073741824
	d.rlimits.cpu == 30
	d.timeout == "60s"
	d.tmpdir == true
	d.landlock.rw == ["/dev/null"]
	not d.env.MAGICK_TEMPORARY_PATH
	d.max_stdin_bytes == 20971520
}

test_convert_rejects_file_and_url_coders if {
	every arg in ["text:/etc/passwd", "@/etc/passwd", "url:http://169.254.169.254/", "msl:/tmp/x.msl", "/etc/passwd", "ephemeral:/var/www/x.png", "-write"] {
		denied_with(web(["convert", arg, "png:-"], "/usr/bin/convert"), "convert: argument 1 is not allowed")
	}
}

# ------------------------------------------------- shells and interpreters

test_deny_inline_code if {
	every argv in [
		["sh", "-c", "id"],
		["bash", "-c", "id"],
		["bash", "-lc", "id"],
		["dash", "-ec", "id"],
		["python3", "-c", "import os"],
		["perl", "-e", "print 1"],
		["perl", "-E", "say 1"],
		["ruby", "-e", "p 1"],
		["node", "-e", "1"],
		["node", "--eval", "1"],
		["lua", "-e", "print(1)"],
		["php", "-r", "echo 1;"],
		["busybox", "sh", "-c", "id"],
		["awk", "-e", "BEGIN{}"],
	] {
		exe := concat("/", ["/usr/bin", argv[0]])
		denied_with(web(argv, exe), "shells and interpreters may not run inline code")
	}
}

test_deny_inline_code_judged_on_resolved_exe if {
	# python3 resolved through a symlink-free PATH entry to a versioned name
	denied_with(web(["python3", "-c", "1"], "/usr/bin/python3.12"), "shells and interpreters may not run inline code (python3 -c)")
	denied_with(web(["/usr/bin/python3.11", "-c", "1"], "/usr/bin/python3.11"), "(python3.11 -c)")
}

test_deny_inline_code_for_any_uid_but_admin if {
	d := decide(req(1000, ["sh", "-c", "id"], "/usr/bin/sh"))
	not d.allow
}

test_interpreter_message_wins_and_all_reasons_are_kept if {
	d := decide(web(["bash", "-c", "id"], "/usr/bin/bash"))
	d.message == "shells and interpreters may not run inline code (bash -c)"
	d.reasons == [
		"shells and interpreters may not run inline code (bash -c)",
		"program not allowed: /usr/bin/bash",
	]
}

test_deny_interpreter_with_script if {
	denied_with(web(["python3", "script.py"], "/usr/bin/python3"), "program not allowed: /usr/bin/python3")
}

test_head_c_is_not_inline_code if {
	allowed(web(["head", "-c", "100", "index.html"], "/usr/bin/head"))
}

# ------------------------------------------------------- the program itself

test_deny_not_allow_listed if {
	denied_with(web(["rm", "-rf", "/"], "/usr/bin/rm"), "program not allowed: /usr/bin/rm")
	denied_with(web(["curl", "http://example.com"], "/usr/bin/curl"), "program not allowed")
}

test_deny_allow_listed_name_outside_bin_dirs if {
	denied_with(web(["uname"], "/usr/local/bin/uname"), "program not allowed: /usr/local/bin/uname")
	denied_with(web(["/tmp/uname"], "/tmp/uname"), "program not allowed: /tmp/uname")
	denied_with(web(["/var/www/uploads/cat"], "/var/www/uploads/cat"), "program not allowed")
	denied_with(web(["/usr/bin/sub/uname"], "/usr/bin/sub/uname"), "program not allowed")
}

test_deny_dotdot_in_argv0 if {
	denied_with(web(["/usr/bin/../bin/uname"], "/usr/bin/../bin/uname"), "argv[0] must not contain \"..\"")
	denied_with(web(["../../usr/bin/uname"], ""), "program not found on the server")
}

test_deny_unresolved_program if {
	denied_with(web(["no-such-tool"], ""), "program not found on the server: no-such-tool")
}

test_deny_argv0_that_does_not_name_the_exe if {
	denied_with(web(["sh"], "/usr/bin/true"), "argv[0] sh does not name the program /usr/bin/true")
}

# ----------------------------------------------------------- hostile argv

test_deny_path_traversal if {
	denied_with(web(["cat", "../../etc/passwd"], "/usr/bin/cat"), "argument 1: \"..\" is not allowed in paths")
	denied_with(web(["cat", "/var/www/../../etc/shadow"], "/usr/bin/cat"), "\"..\" is not allowed")
	denied_with(web(["head", "-n", "1", "a/../../b"], "/usr/bin/head"), "argument 3: \"..\"")
}

test_deny_absolute_path_outside_content_roots if {
	denied_with(web(["cat", "/etc/passwd"], "/usr/bin/cat"), "argument 1: files must be under /var/www")
	denied_with(web(["wc", "--files0-from=/etc/passwd"], "/usr/bin/wc"), "files must be under")
	denied_with(web(["ls", "/var/wwwevil"], "/usr/bin/ls"), "files must be under")
}

test_content_roots_come_from_config if {
	cfg := object.union(data.sockwarden.config, {"content_roots": ["/srv/www", "/var/www"]})
	d1 := sockwarden.decision with input as web(["cat", "/srv/www/a"], "/usr/bin/cat") with data.sockwarden.config as cfg
	d1.allow
	d1.cwd == "/srv/www"
	d2 := sockwarden.decision with input as web(["cat", "/etc/passwd"], "/usr/bin/cat") with data.sockwarden.config as cfg
	d2.message == "argument 1: files must be under /srv/www or /var/www"
}

test_allow_dots_that_are_not_traversal if {
	allowed(web(["cat", "/var/www/..hidden", "a..b"], "/usr/bin/cat"))
}

test_deny_empty_argv if {
	denied_with(web([], ""), "empty argv")
}

test_deny_too_many_arguments if {
	argv := array.concat(["echo"], [x | some x in numbers.range(1, 64)])
	denied_with(web(argv, "/usr/bin/echo"), "too many arguments (65 > 64)")
}

test_deny_overlong_argv if {
	long := sprintf("%070000d", [0]) # 70000 zeros
	denied_with(web(["echo", long], "/usr/bin/echo"), "arguments longer than 65536 bytes")
}

test_deny_nul_byte if {
	denied_with(web(["echo", "a\u0000b"], "/usr/bin/echo"), "NUL byte")
}

test_long_values_are_shortened_in_messages if {
	name := sprintf("x%0200d", [0])
	d := decide(web([name], ""))
	count(d.message) < 120
	endswith(d.message, "...")
}

# ------------------------------------------------------------------ callers

test_admin_profile_is_audit_only if {
	d := decide(req(0, ["rm", "-rf", "/tmp/x"], "/usr/bin/rm"))
	d.allow
	count(d.reasons) > 0
	every r in d.reasons {
		startswith(r, "audit-only: ")
	}
	d.rlimits.core == 0
	not d.landlock
}

test_other_uid_denied if {
	denied_with(req(1000, ["uname"], "/usr/bin/uname"), "uid 1000 is not permitted to use this service")
	denied_with(req(65534, ["true"], "/usr/bin/true"), "uid 65534 is not permitted")
}

test_user_name_is_not_trusted if {
	r := json.patch(req(1000, ["uname"], "/usr/bin/uname"), [{"op": "replace", "path": "/peer/user", "value": "www-data"}])
	denied_with(r, "uid 1000 is not permitted")
}

test_uids_come_from_config if {
	cfg := object.union(data.sockwarden.config, {"web_uids": [1000], "admin_uids": []})
	d1 := sockwarden.decision with input as req(1000, ["uname"], "/usr/bin/uname") with data.sockwarden.config as cfg
	d1.allow
	d2 := sockwarden.decision with input as req(33, ["uname"], "/usr/bin/uname") with data.sockwarden.config as cfg
	not d2.allow
	d3 := sockwarden.decision with input as req(0, ["uname"], "/usr/bin/uname") with data.sockwarden.config as cfg
	not d3.allow
}

test_bin_dirs_come_from_config if {
	cfg := object.union(data.sockwarden.config, {"bin_dirs": ["/opt/tools/bin"]})
	d1 := sockwarden.decision with input as web(["uname"], "/opt/tools/bin/uname") with data.sockwarden.config as cfg
	d1.allow
	d2 := sockwarden.decision with input as web(["uname"], "/usr/bin/uname") with data.sockwarden.config as cfg
	not d2.allow
}

# ---------------------------------------------------------------- invariants

test_no_interpreter_is_allow_listed if {
	every name, _ in sockwarden.tools {
		not sockwarden.is_interpreter(name)
	}
}

test_every_web_denial_has_a_specific_message if {
	every r in [
		web(["rm"], "/usr/bin/rm"),
		web(["sh", "-c", "x"], "/usr/bin/sh"),
		web(["cat", "/etc/passwd"], "/usr/bin/cat"),
		web([], ""),
	] {
		d := decide(r)
		not d.allow
		d.message != "request denied by policy"
	}
}
