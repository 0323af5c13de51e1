-- sockexec.lua: a small client of the sockexec protocol (sockwarden,
-- sockexec) for nginx/OpenResty and for plain Lua.
--
-- Under nginx (lua-nginx-module, OpenResty) it uses a non-blocking cosocket
-- (ngx.socket.tcp with a "unix:" address). Under plain Lua 5.1 it uses
-- LuaSocket (require "socket.unix", Debian package lua-socket) and blocks.
-- The same file serves both; the transport is picked when it is loaded
-- (sockexec.transport is "nginx" or "luasocket").
--
-- The API has the shape of lua-resty-exec:
--
--   local exec = require "sockexec"
--   local prog = exec.new("/run/sockwarden.sock")
--   local res, err = prog("uname", "-a")
--   -- res = { stdout = "Linux ...\n", stderr = "", exitcode = 0, termsig = nil }
--   local res, err = prog{ argv = {"wc", "-c"}, stdin = "data",
--                          stdout = function(data) end, stderr = function(data) end }
--
--   local s, err = exec.socket("/run/sockwarden.sock")     -- duplex
--   s:send_args({"cat"}); s:send("hello"); local data, typ, err = s:receive()
--   s:send_close(); data, typ, err = s:receive()   -- "0", "exitcode"
--   s:close()
--
-- Protocol (see sockwarden's README): the client sends a netstring with the
-- argument count, the argv netstrings, stdin netstrings and the empty
-- netstring "0:," (end of stdin); the server answers with (type, data)
-- netstring pairs, type one of stdout, stderr, exitcode, termsig, and
-- closes after exitcode or termsig.
--
-- Rules this client keeps:
--   * it never half-closes the socket: sockexec and sockwarden take a
--     half-close as a disconnect and kill the program. Closing the socket
--     (close(), an error, the end of the nginx request) kills the program;
--   * replies are parsed strictly (digits only, no leading zeros, a
--     bounded length, the trailing comma, the four known types, a decimal
--     exitcode) and a violation closes the connection with an error;
--   * memory is bounded: max_chunk bounds one netstring, max_buffered the
--     output read but not yet returned, max_output what a one-shot call
--     collects.

local _M = { _VERSION = "0.1.0" }

local type, tostring, tonumber, select = type, tostring, tonumber, select
local setmetatable, pcall, error, pairs = setmetatable, pcall, error, pairs
local sub, find, match, byte, concat = string.sub, string.find, string.match, string.byte, table.concat
local min = math.min

local DEFAULT_TIMEOUT = 60000 -- ms, like lua-resty-exec
local DEFAULT_MAX_CHUNK = 1048576 -- bytes in one output netstring
local DEFAULT_MAX_BUFFERED = 16777216 -- output bytes read but not yet returned
local DEFAULT_MAX_OUTPUT = 16777216 -- stdout+stderr a one-shot call collects
local STDIN_CHUNK = 65536 -- stdin is sent in netstrings of at most this size
local INLINE_STDIN = 65536 -- smaller stdin is sent before reading, in one write
local READ_SIZE = 65536

local TYPES = { stdout = true, stderr = true, exitcode = true, termsig = true }
local MAX_TYPE_LEN = 8 -- #"exitcode"

-- Transport -----------------------------------------------------------------

local ngx = ngx -- nil outside nginx
local in_nginx = type(ngx) == "table" and type(ngx.socket) == "table" and type(ngx.socket.tcp) == "function"

local socket, unix
if in_nginx then
    _M.transport = "nginx"
else
    socket = require("socket")
    unix = require("socket.unix")
    _M.transport = "luasocket"
end

local function new_stream()
    if in_nginx then
        return ngx.socket.tcp()
    end
    local ctor = type(unix) == "table" and (unix.stream or unix.tcp) or unix
    return ctor()
end

-- Conn: one connection, one program ------------------------------------------

local Conn = {}
Conn.__index = Conn

local function opt(opts, key, default)
    local v = opts and opts[key]
    if v == nil then
        return default
    end
    return v
end

local function new_conn(opts)
    local c = setmetatable({
        timeout = opt(opts, "timeout", DEFAULT_TIMEOUT), -- ms
        max_chunk = opt(opts, "max_chunk", DEFAULT_MAX_CHUNK),
        max_buffered = opt(opts, "max_buffered", DEFAULT_MAX_BUFFERED),
        buf = "", -- received bytes; unread from pos on
        pos = 1,
        q = {}, -- chunks drained while sending (LuaSocket), before buf
        qhead = 1, -- q[qhead..qtail] are queued
        qtail = 0,
        qbytes = 0,
        eof = false, -- the server closed its end
        args_sent = false,
        stdin_closed = false,
        done = false, -- exitcode/termsig received
        ptype = nil, -- type of a pair whose data timed out
        err = nil, -- sticky fatal error
    }, Conn)
    if type(c.timeout) ~= "number" or c.timeout <= 0 then
        return nil, "timeout must be a positive number of milliseconds"
    end
    if type(c.max_chunk) ~= "number" or c.max_chunk < 1 then
        return nil, "max_chunk must be a positive number"
    end
    return c
end

-- _close closes the socket (never a half-close). Under nginx it fails
-- with "socket busy writing" while another light thread sends on it; the
-- socket is then kept so that a later close can succeed.
function Conn:_close()
    local sock = self.sock
    if not sock then
        return true
    end
    local ok, err = sock:close()
    if ok or not in_nginx or err == "closed" then
        self.sock = nil
        return true
    end
    return nil, err
end

function Conn:_fail(err)
    if not self.err then
        self.err = err
    end
    self:_close()
    return nil, self.err
end

function Conn:settimeout(ms)
    self.timeout = ms
    if self.sock and in_nginx then
        self.sock:settimeouts(ms, ms, ms)
    end
end

function Conn:connect(path)
    if type(path) ~= "string" or path == "" then
        return nil, "socket path required"
    end
    if sub(path, 1, 5) == "unix:" then
        path = sub(path, 6)
    end
    local sock, err = new_stream()
    if not sock then
        return nil, "socket: " .. tostring(err)
    end
    local ok
    if in_nginx then
        sock:settimeouts(self.timeout, self.timeout, self.timeout)
        ok, err = sock:connect("unix:" .. path)
    else
        sock:settimeout(self.timeout / 1000)
        ok, err = sock:connect(path)
    end
    if not ok then
        sock:close()
        return nil, "connect " .. path .. ": " .. tostring(err)
    end
    self.sock = sock
    return true
end

-- Bytes read from the socket without blocking, while a LuaSocket send
-- waits: queued so that neither side can block the other.
function Conn:_drain()
    self.sock:settimeout(0)
    local data, err, partial = self.sock:receive(READ_SIZE)
    data = data or partial
    if data and data ~= "" then
        self.qtail = self.qtail + 1
        self.q[self.qtail] = data
        self.qbytes = self.qbytes + #data
        if self.qbytes + #self.buf - self.pos + 1 > self.max_buffered then
            return self:_fail("more than " .. self.max_buffered .. " bytes of unread output")
        end
    end
    if err == "closed" then
        self.eof = true
    elseif err and err ~= "timeout" then
        return self:_fail("receive: " .. err)
    end
    return true
end

-- _send writes all of data. Under LuaSocket it reads whatever the server
-- sends meanwhile into the queue: the program may be blocked writing its
-- output, and would never read the rest of its stdin otherwise.
function Conn:_send(data)
    if self.err then
        return nil, self.err
    end
    if self.send_err then
        return nil, self.send_err
    end
    if not self.sock then
        return nil, "closed"
    end
    -- A failed send does not end the connection for reading: the exit
    -- status may still be on its way (or already buffered).
    if in_nginx then
        local bytes, err = self.sock:send(data)
        if not bytes then
            self.send_err = err
            return nil, err
        end
        return bytes
    end
    local sock, pos, n = self.sock, 1, #data
    while pos <= n do
        sock:settimeout(0)
        local last, err, partial = sock:send(data, pos)
        if last then
            break
        end
        if err ~= "timeout" then
            self.send_err = err -- "closed" when the server is gone
            return nil, err
        end
        pos = partial + 1
        -- wait until the socket is writable, or readable (not after the
        -- server's end of stream, which stays readable)
        local r, _, serr = socket.select(not self.eof and { sock } or nil, { sock }, self.timeout / 1000)
        if serr == "timeout" then
            return nil, "timeout"
        end
        if r and r[1] then
            local ok, derr = self:_drain()
            if not ok then
                return nil, derr
            end
        end
    end
    sock:settimeout(self.timeout / 1000)
    return n
end

-- _more appends the next received bytes to buf. Returns true, or nil and
-- "closed" (end of stream) or "timeout" or another error.
function Conn:_more()
    local chunk
    if self.qhead <= self.qtail then
        chunk = self.q[self.qhead]
        self.q[self.qhead] = nil
        self.qhead = self.qhead + 1
        self.qbytes = self.qbytes - #chunk
        if self.qhead > self.qtail then
            self.q, self.qhead, self.qtail = {}, 1, 0
        end
    elseif self.eof or not self.sock then
        return nil, "closed"
    elseif in_nginx then
        local data, err = self.sock:receiveany(READ_SIZE)
        if not data then
            if err == "closed" then
                self.eof = true
            end
            return nil, err
        end
        chunk = data
    else
        local sock = self.sock
        local r, _, serr = socket.select({ sock }, nil, self.timeout / 1000)
        if serr == "timeout" or not (r and r[1]) then
            return nil, "timeout"
        end
        sock:settimeout(0)
        local data, err, partial = sock:receive(READ_SIZE)
        sock:settimeout(self.timeout / 1000)
        data = data or partial
        if err == "closed" then
            self.eof = true
        elseif err and err ~= "timeout" then
            return nil, err
        end
        if not data or data == "" then
            if self.eof then
                return nil, "closed"
            end
            return nil, "timeout"
        end
        chunk = data
    end
    if self.pos > #self.buf then
        self.buf = chunk
    else
        self.buf = sub(self.buf, self.pos) .. chunk
    end
    self.pos = 1
    if #self.buf + self.qbytes > self.max_buffered + self.max_chunk + 32 then
        return nil, "protocol error: receive buffer over its bound"
    end
    return true
end

-- _netstring reads one netstring of at most max bytes. Returns its payload,
-- or nil and an error: "closed" only at a clean end of stream before the
-- first byte, "timeout" with the partial netstring kept for a retry, or a
-- "protocol error: ..." after which the connection is closed.
function Conn:_netstring(max)
    local maxdigits = #tostring(max)
    local len, start
    while true do
        local avail = #self.buf - self.pos + 1
        local head = sub(self.buf, self.pos, self.pos + min(avail, maxdigits + 1) - 1)
        local digits, nextc = match(head, "^(%d*)(.?)")
        if #digits > 1 and byte(digits, 1) == 48 then
            return nil, "protocol error: netstring length with a leading zero"
        end
        if nextc == ":" then
            if digits == "" then
                return nil, "protocol error: netstring without a length"
            end
            len = tonumber(digits)
            if len > max then
                return nil, "protocol error: netstring of " .. digits .. " bytes (limit " .. max .. ")"
            end
            start = self.pos + #digits + 1
            break
        elseif nextc ~= "" then
            return nil, "protocol error: bad byte in netstring length"
        elseif #digits > maxdigits then
            return nil, "protocol error: netstring longer than " .. max .. " bytes"
        end
        local ok, err = self:_more()
        if not ok then
            if err == "closed" and avail > 0 then
                return nil, "protocol error: connection closed inside a netstring"
            end
            return nil, err
        end
    end
    local hdr = start - self.pos -- "<digits>:"
    while #self.buf < start + len do
        local ok, err = self:_more()
        if not ok then
            if err == "closed" then
                return nil, "protocol error: connection closed inside a netstring"
            end
            return nil, err
        end
        start = self.pos + hdr -- _more moved the unread bytes to the front
    end
    if byte(self.buf, start + len) ~= 44 then -- ","
        return nil, "protocol error: netstring not terminated by a comma"
    end
    local payload = sub(self.buf, start, start + len - 1)
    self.pos = start + len + 1
    return payload
end

-- receive returns the next output: data, typ ("stdout", "stderr",
-- "exitcode", "termsig"), or nil, nil, err ("closed" after the exit status
-- or at the end of the stream, "timeout", or another error). The order of
-- the results is lua-resty-exec's.
function Conn:receive()
    if self.err then
        return nil, nil, self.err
    end
    if not self.args_sent then
        return nil, nil, "must send args first"
    end
    if self.done then
        return nil, nil, "closed"
    end
    local typ = self.ptype
    if not typ then
        local t, err = self:_netstring(MAX_TYPE_LEN)
        if not t then
            if err == "closed" then
                self:_fail("closed")
                return nil, nil, "closed"
            end
            if err ~= "timeout" then
                self:_fail(err)
            end
            return nil, nil, err
        end
        if not TYPES[t] then
            self:_fail("protocol error: unknown reply type")
            return nil, nil, self.err
        end
        typ = t
    end
    self.ptype = typ
    local max = self.max_chunk
    if typ == "exitcode" then
        max = 10
    elseif typ == "termsig" then
        max = 32
    end
    local data, err = self:_netstring(max)
    if not data then
        if err == "closed" then
            err = "protocol error: connection closed after a type"
        end
        if err ~= "timeout" then
            self:_fail(err)
        end
        return nil, nil, err
    end
    self.ptype = nil
    if typ == "exitcode" or typ == "termsig" then
        local pattern = typ == "exitcode" and "^%d+$" or "^[%u%d+-]+$"
        if not match(data, pattern) then
            self:_fail("protocol error: malformed " .. typ)
            return nil, nil, self.err
        end
        self.done = true
        -- The server closes now; so do we (a full close, never a half-close).
        self:_close()
    end
    return data, typ
end

local function ns(s)
    return #s .. ":" .. s .. ","
end

-- send_args sends the argv (an array of strings) and starts the program.
function Conn:send_args(argv)
    if self.args_sent then
        return nil, "args already sent"
    end
    if type(argv) ~= "table" or #argv < 1 then
        return nil, "argv must be a non-empty array of strings"
    end
    local parts = { ns(tostring(#argv)) }
    for i = 1, #argv do
        local a = argv[i]
        if type(a) == "number" then
            a = tostring(a)
        end
        if type(a) ~= "string" then
            return nil, "argv[" .. i .. "] is not a string"
        end
        if find(a, "\0", 1, true) then
            return nil, "argv[" .. i .. "] contains a NUL byte"
        end
        if i == 1 and a == "" then
            return nil, "argv[1] is empty"
        end
        parts[#parts + 1] = ns(a)
    end
    local bytes, err = self:_send(concat(parts))
    if not bytes then
        return nil, err
    end
    self.args_sent = true
    return bytes
end

-- send writes data to the program's stdin. An empty string sends nothing
-- (unlike lua-resty-exec, where it closes stdin): use send_close().
function Conn:send(data)
    if not self.args_sent then
        return nil, "must send args first"
    end
    if self.stdin_closed then
        return nil, "stdin already closed"
    end
    if type(data) ~= "string" then
        return nil, "data must be a string"
    end
    local n = #data
    if n == 0 then
        return 0
    end
    if n <= STDIN_CHUNK then
        return self:_send(ns(data))
    end
    local i = 1
    while i <= n do
        local j = min(i + STDIN_CHUNK - 1, n)
        local ok, err = self:_send(ns(sub(data, i, j)))
        if not ok then
            return nil, err
        end
        i = j + 1
    end
    return n
end

Conn.send_data = Conn.send

-- send_close closes the program's stdin (the empty netstring).
function Conn:send_close()
    if not self.args_sent then
        return nil, "must send args first"
    end
    if self.stdin_closed then
        return 0
    end
    local bytes, err = self:_send("0:,")
    if not bytes then
        return nil, err
    end
    self.stdin_closed = true
    return bytes
end

-- close closes the connection; a program still running is killed.
function Conn:close()
    return self:_close()
end

-- socket connects to the server at path and returns a duplex connection.
-- opts: timeout (ms, default 60000), max_chunk, max_buffered.
function _M.socket(path, opts)
    local c, err = new_conn(opts)
    if not c then
        return nil, err
    end
    local ok
    ok, err = c:connect(path)
    if not ok then
        return nil, err
    end
    return c
end

-- One-shot programs ----------------------------------------------------------

-- write_stdin sends stdin (a string, or a function returning the next
-- string or nil at the end) and closes it.
local function write_stdin(c, stdin)
    if type(stdin) == "string" then
        local ok, err = c:send(stdin)
        if not ok then
            return nil, err
        end
    elseif type(stdin) == "function" then
        while true do
            local chunk = stdin()
            if chunk == nil or chunk == false then
                break
            end
            local ok, err = c:send(chunk)
            if not ok then
                return nil, err
            end
        end
    end
    return c:send_close()
end

local function run(self, ...)
    local nargs = select("#", ...)
    local first = ...
    local spec = {}
    local argv
    if nargs == 1 and type(first) == "table" then
        spec = first
        argv = spec.argv
        if argv == nil and spec[1] ~= nil then
            argv = spec -- prog{"cat", stdin = "..."}
        elseif argv == nil then
            argv = self.argv
        end
    elseif nargs >= 1 then
        argv = { ... }
    else
        argv = self.argv
    end
    if type(argv) == "string" then
        argv = { argv }
    end
    if type(argv) ~= "table" or #argv < 1 then
        return nil, "no arguments supplied"
    end
    local function pick(key)
        local v = spec[key]
        if v == nil then
            v = self[key]
        end
        return v
    end
    local stdin, on_stdout, on_stderr = pick("stdin"), pick("stdout"), pick("stderr")
    local timeout_fatal = pick("timeout_fatal")
    local max_output = pick("max_output") or DEFAULT_MAX_OUTPUT
    if stdin ~= nil and type(stdin) ~= "string" and type(stdin) ~= "function" then
        return nil, "invalid argument 'stdin' (requires a string or a function)"
    end
    if on_stdout ~= nil and type(on_stdout) ~= "function" then
        return nil, "invalid argument 'stdout' (requires function)"
    end
    if on_stderr ~= nil and type(on_stderr) ~= "function" then
        return nil, "invalid argument 'stderr' (requires function)"
    end

    local c, err = _M.socket(self.path, {
        timeout = pick("timeout") or DEFAULT_TIMEOUT,
        max_chunk = pick("max_chunk"),
        max_buffered = pick("max_buffered"),
    })
    if not c then
        return nil, err
    end
    local ok
    ok, err = c:send_args(argv)
    if not ok then
        c:close()
        return nil, err
    end

    -- Send stdin. A large stdin is written while the output is read
    -- (a light thread under nginx; draining sends under LuaSocket),
    -- or a program echoing its input would block both ends.
    local writer, werr
    if stdin == nil or (type(stdin) == "string" and #stdin <= INLINE_STDIN) then
        if stdin and stdin ~= "" then
            ok, werr = c:_send(ns(stdin) .. "0:,")
            c.stdin_closed = true
        else
            ok, werr = c:send_close()
        end
    elseif in_nginx then
        writer = ngx.thread.spawn(write_stdin, c, stdin)
    else
        ok, werr = write_stdin(c, stdin)
    end

    local res = { stdout = "", stderr = "" }
    local out, errs, nout = {}, {}, 0
    local function finish()
        if writer then
            ngx.thread.kill(writer) -- harmless when it has finished
        end
        c:close()
    end
    while true do
        local data, typ, rerr = c:receive()
        if not data then
            if rerr == "timeout" and timeout_fatal == false then -- luacheck: ignore
                -- keep waiting, as lua-resty-exec does
            else
                finish()
                werr = werr or c.send_err
                if rerr == "closed" then
                    rerr = "connection closed without an exit status"
                    if werr then
                        rerr = rerr .. " (sending stdin: " .. tostring(werr) .. ")"
                    end
                end
                return nil, rerr
            end
        elseif typ == "exitcode" then
            res.exitcode = tonumber(data)
            break
        elseif typ == "termsig" then
            res.termsig = data
            break
        else
            local cb = typ == "stdout" and on_stdout or on_stderr
            if cb then
                local cok, cerr = pcall(cb, data)
                if not cok then
                    finish()
                    error(cerr, 0)
                end
            else
                nout = nout + #data
                if nout > max_output then
                    finish()
                    return nil, "output larger than max_output (" .. max_output .. " bytes)"
                end
                local t = typ == "stdout" and out or errs
                t[#t + 1] = data
            end
        end
    end
    finish()
    res.stdout = concat(out)
    res.stderr = concat(errs)
    return res
end

-- new returns a program runner for the server at path (with or without a
-- "unix:" prefix). Call it: prog("uname", "-a"), or prog{argv = {...},
-- stdin = "...", stdout = fn, stderr = fn}. Fields set on prog (argv,
-- stdin, stdout, stderr, timeout, timeout_fatal, max_output, max_chunk,
-- max_buffered) are defaults; a table argument overrides them for that
-- call only, so one prog may serve concurrent requests.
--
-- Returns res = { stdout = string, stderr = string, exitcode = number or
-- nil, termsig = string or nil } ("" for output passed to a callback), or
-- nil and an error message.
function _M.new(path, opts)
    if type(path) ~= "string" or path == "" then
        return nil, "must supply a socket path"
    end
    local o = { path = path, timeout = DEFAULT_TIMEOUT, timeout_fatal = true }
    if type(opts) == "table" then
        for k, v in pairs(opts) do
            o[k] = v
        end
    end
    o.exec = run
    return setmetatable(o, { __call = run })
end

return _M
