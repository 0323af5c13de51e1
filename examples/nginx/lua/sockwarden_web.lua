-- sockwarden_web.lua: turn the result of a sockexec one-shot call into an
-- HTTP response (nginx only). Used by examples/nginx/nginx.conf.
--
--   200  the program exited 0: its stdout is the body
--   403  sockwarden refused the request: the body is sockwarden's one-line
--        message "sockwarden: denied: <message> (request <id>)"
--   500  the program failed (non-zero exit, killed by a signal, could not
--        be started): a short body; its stderr goes to the error log only
--   502  sockwarden could not be reached or broke the protocol
--
-- Every answer from sockwarden carries X-Exit-Code or X-Term-Sig.

local _M = {}

local DENIED = "^sockwarden: denied: "

-- denied reports whether sockwarden refused the request: exit code 126 and
-- its "sockwarden: denied:" line on stderr (a program that merely exits
-- 126 does not print that line first).
function _M.denied(res)
    return res ~= nil and res.exitcode == 126 and res.stderr ~= nil and res.stderr:find(DENIED) ~= nil
end

-- status_headers sets X-Exit-Code / X-Term-Sig from res.
function _M.status_headers(res)
    if res.exitcode then
        ngx.header["X-Exit-Code"] = tostring(res.exitcode)
    end
    if res.termsig then
        ngx.header["X-Term-Sig"] = res.termsig
    end
end

-- fail answers for a call that produced no usable output. It must run
-- before any output was sent.
function _M.fail(res, err)
    ngx.header.content_type = "text/plain"
    if not res then
        ngx.log(ngx.ERR, "sockwarden: ", err)
        ngx.status = ngx.HTTP_BAD_GATEWAY
        ngx.say("cannot run the program: sockwarden is unavailable")
        return ngx.exit(ngx.HTTP_BAD_GATEWAY)
    end
    _M.status_headers(res)
    if _M.denied(res) then
        -- sockwarden's message is meant for the caller; its reasons are
        -- in sockwarden's audit log.
        ngx.log(ngx.WARN, "sockwarden refused the request: ", res.stderr)
        ngx.status = ngx.HTTP_FORBIDDEN
        ngx.print(res.stderr)
        return ngx.exit(ngx.HTTP_FORBIDDEN)
    end
    ngx.log(ngx.ERR, "program failed: exit ", tostring(res.exitcode), " signal ", tostring(res.termsig),
        ", stderr: ", res.stderr)
    ngx.status = ngx.HTTP_INTERNAL_SERVER_ERROR
    if res.termsig then
        ngx.say("the program was killed by signal ", res.termsig)
    else
        ngx.say("the program failed with exit code ", tostring(res.exitcode))
    end
    return ngx.exit(ngx.HTTP_INTERNAL_SERVER_ERROR)
end

-- reply answers with the whole result of a one-shot call.
function _M.reply(res, err, content_type)
    if not res or res.exitcode ~= 0 then
        return _M.fail(res, err)
    end
    _M.status_headers(res)
    ngx.header.content_type = content_type or "text/plain"
    ngx.header.content_length = #res.stdout
    ngx.print(res.stdout)
    return ngx.exit(ngx.HTTP_OK)
end

return _M
