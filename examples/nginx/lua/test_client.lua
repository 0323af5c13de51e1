-- test_client.lua: checks sockexec.lua under plain Lua 5.1 + LuaSocket.
--
--   LUA_PATH='examples/nginx/lua/?.lua;;' lua5.1 examples/nginx/lua/test_client.lua SOCKET [FAKE_SOCKET]
--
-- SOCKET is a running sockwarden that admits this user. FAKE_SOCKET, if
-- given, is a fake server (see e2e_test.go) that answers a request whose
-- argv[0] names a case with canned, mostly malformed, bytes.
-- Prints "ok - <name>" or "FAIL - <name>: <why>" per check and exits 1 if
-- any check failed. Run by examples/nginx/e2e_test.go.

local exec = require "sockexec"

local sock_path, fake_path = arg[1], arg[2]
if not sock_path then
    io.stderr:write("usage: lua5.1 test_client.lua SOCKET [FAKE_SOCKET]\n")
    os.exit(2)
end

local passed, failed = 0, 0

local function show(v)
    if type(v) == "string" then
        if #v > 80 then
            v = v:sub(1, 80) .. "...(" .. #v .. " bytes)"
        end
        return string.format("%q", v)
    end
    return tostring(v)
end

local function check(name, cond, ...)
    if cond then
        passed = passed + 1
        print("ok - " .. name)
    else
        failed = failed + 1
        local parts = {}
        for i = 1, select("#", ...) do
            parts[#parts + 1] = show((select(i, ...)))
        end
        print("FAIL - " .. name .. ": " .. table.concat(parts, " "))
    end
end

local function sh(cmd)
    local f = assert(io.popen(cmd, "r"))
    local out = f:read("*a")
    f:close()
    return out
end

local function all_bytes(n)
    local t = {}
    for i = 0, 255 do
        t[#t + 1] = string.char(i)
    end
    local s = table.concat(t)
    local reps = {}
    for i = 1, math.ceil(n / 256) do
        -- vary the pattern so that a misplaced chunk cannot go unnoticed
        reps[i] = s:sub(i % 256 + 1) .. s:sub(1, i % 256)
    end
    return table.concat(reps):sub(1, n)
end

check("transport is luasocket", exec.transport == "luasocket", exec.transport)

local prog = assert(exec.new(sock_path, { timeout = 10000 }))

-- one-shot --------------------------------------------------------------------

local res, err = prog("uname", "-a")
local want = sh("uname -a")
check("uname -a equals the local uname -a", res and res.stdout == want and res.exitcode == 0 and res.termsig == nil,
    res and res.stdout, want, err)

res, err = prog{ argv = "uname" }
check("argv as a string", res and res.stdout == sh("uname"), res and res.stdout, err)

res, err = prog{ "cat", stdin = "array part as argv" }
check("argv as the array part of the table", res and res.stdout == "array part as argv", res and res.stdout, err)

res, err = prog("sh", "-c", "echo out; echo err >&2; exit 3")
check("stdout, stderr and exit code", res and res.stdout == "out\n" and res.stderr == "err\n" and res.exitcode == 3,
    res and res.stdout, res and res.stderr, res and res.exitcode, err)

res, err = prog("sh", "-c", "kill -TERM $$")
check("termsig", res and res.termsig == "TERM" and res.exitcode == nil, res and res.termsig, res and res.exitcode, err)

res, err = prog("no-such-program-sockexec-test")
check("program not found: 127 and a message", res and res.exitcode == 127 and #res.stderr > 0,
    res and res.exitcode, res and res.stderr, err)

-- stdin ---------------------------------------------------------------------

local small = all_bytes(256)
res, err = prog{ argv = { "cat" }, stdin = small }
check("stdin: every byte value round-trips", res and res.stdout == small and res.exitcode == 0, res and res.stdout, err)

-- Larger than the socket buffers both ways: cat blocks on its output
-- until the client reads, so the client must read while it sends.
local big = all_bytes(3 * 1024 * 1024 + 7)
local t0 = os.time()
res, err = prog{ argv = { "cat" }, stdin = big }
check("stdin: 3 MiB through cat, byte for byte", res and res.stdout == big and res.exitcode == 0,
    res and #res.stdout, err)
check("stdin: 3 MiB in reasonable time", os.time() - t0 <= 10, os.time() - t0)

local n = 0
res, err = prog{
    argv = { "wc", "-c" },
    stdin = function()
        n = n + 1
        if n > 10 then
            return nil
        end
        return string.rep("x", 100000)
    end,
}
check("stdin from a function", res and res.stdout:match("^%s*(%d+)") == "1000000", res and res.stdout, err)

res, err = prog{ argv = { "cat" }, stdin = "" }
check("empty stdin", res and res.stdout == "" and res.exitcode == 0, res and res.stdout, err)

-- callbacks -----------------------------------------------------------------

local got_out, got_err = {}, {}
res, err = prog{
    argv = { "sh", "-c", "printf a; printf b >&2; printf c" },
    stdout = function(d)
        got_out[#got_out + 1] = d
    end,
    stderr = function(d)
        got_err[#got_err + 1] = d
    end,
}
check("callbacks get the output", res and table.concat(got_out) == "ac" and table.concat(got_err) == "b"
    and res.stdout == "" and res.stderr == "", table.concat(got_out), table.concat(got_err), err)

-- prog fields are defaults; a table argument overrides them for one call
prog.stdin = "from the prog field"
res = prog("cat")
check("prog.stdin is a default", res and res.stdout == "from the prog field", res and res.stdout)
res = prog{ argv = { "cat" }, stdin = "per call" }
check("call options override", res and res.stdout == "per call", res and res.stdout)
res = prog("cat")
check("call options do not stick", res and res.stdout == "from the prog field", res and res.stdout)
prog.stdin = nil

-- client-side argv checks -------------------------------------------------------

res, err = prog{ argv = {} }
check("empty argv refused", res == nil and err == "no arguments supplied", err)
res, err = prog("echo", "a\0b")
check("NUL in argv refused", res == nil and tostring(err):find("NUL"), err)
res, err = exec.new("/nonexistent/sockexec.sock")("true")
check("connect error", res == nil and tostring(err):find("^connect"), err)

-- duplex ----------------------------------------------------------------------

local s = assert(exec.socket(sock_path, { timeout = 5000 }))
assert(s:send_args({ "cat" }))

local function echo(msg)
    assert(s:send(msg))
    local got = ""
    while #got < #msg do
        local data, typ, rerr = s:receive()
        if not data or typ ~= "stdout" then
            return nil, tostring(typ) .. " " .. tostring(data) .. " " .. tostring(rerr)
        end
        got = got .. data
    end
    return got
end

local e1, e1err = echo("ping\n")
check("duplex: first echo", e1 == "ping\n", e1, e1err)
local e2, e2err = echo("pong\n")
check("duplex: second echo while cat runs", e2 == "pong\n", e2, e2err)
local bigmsg = all_bytes(300000)
local e3, e3err = echo(bigmsg)
check("duplex: 300 KB echo", e3 == bigmsg, e3 and #e3, e3err)
check("duplex: empty send is a no-op", s:send("") == 0)
assert(s:send_close())
local data, typ, rerr = s:receive()
check("duplex: exit status after send_close", data == "0" and typ == "exitcode", data, typ, rerr)
data, typ, rerr = s:receive()
check("duplex: closed after the status", data == nil and typ == nil and rerr == "closed", data, typ, rerr)
local sb, sberr = s:send("late")
check("duplex: send after the end fails", sb == nil, sb, sberr)
s:close()

-- closing early kills the program; the server stays usable
s = assert(exec.socket(sock_path))
assert(s:send_args({ "sleep", "30" }))
s:close()
res, err = prog("echo", "still serving")
check("server fine after an early close", res and res.stdout == "still serving\n", res and res.stdout, err)

-- strict parsing, against the fake server -----------------------------------------

if fake_path then
    local fake = assert(exec.new(fake_path, { timeout = 2000 }))
    local function case(name, pattern)
        local r, e = fake(name)
        check("strict: " .. name, r == nil and type(e) == "string" and e:find(pattern) ~= nil,
            r and r.stdout, e, pattern)
    end
    res, err = fake("ok")
    check("strict: well-formed control case", res and res.stdout == "hi" and res.exitcode == 0, res and res.stdout, err)
    case("leading-zero", "leading zero")
    case("no-comma", "comma")
    case("bad-length", "bad byte")
    case("garbage-then-wait", "bad byte") -- at once, not after the timeout
    case("huge-length", "longer than")
    case("over-max", "limit") -- at once, without reading 2 MB
    case("unknown-type", "unknown reply type")
    case("bad-exitcode", "malformed exitcode")
    case("bad-termsig", "malformed termsig")
    case("truncated", "closed inside a netstring")
    case("type-then-close", "closed after a type")
    case("no-status", "without an exit status")
    case("silent", "timeout")

    -- the duplex API reports the same errors and stays failed
    local fs = assert(exec.socket(fake_path, { timeout = 2000 }))
    assert(fs:send_args({ "no-comma" }))
    assert(fs:send_close())
    local d1, t1, x1 = fs:receive()
    local d2, t2, x2 = fs:receive()
    check("strict: socket API error is sticky", d1 == nil and t1 == nil and tostring(x1):find("comma")
        and x2 == x1, d1, t1, x1, x2)
    fs:close()
end

print(string.format("%d passed, %d failed", passed, failed))
if failed > 0 then
    os.exit(1)
end
print("PASS")
