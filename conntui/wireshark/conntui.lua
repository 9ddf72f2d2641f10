-- conntui.lua: conntui's attributions as Wireshark fields.
--
-- conntui writes, in each packet's pcapng comment, who
-- sent the packet, which socket and process the kernel delivers it to, and why:
--
--   conntui: python3[42] fd 3 → nginx[43] fd 7 (established): <explanation>
--   conntui-json: {"receiver":{...,"holders":[{"pid":43,"process":"nginx","fd":7}]},...}
--
-- The JSON line is written in full once per 8,192 packets of a flow; the packets between
-- say "conntui-json-ref: frame N" (the frame that carries it). This post-dissector reads
-- both forms and adds filterable fields:
--
--   conntui.sender.pid / .fd / .process / .container / .state   (one set per holder)
--   conntui.receiver.pid / .fd / .process / .container / .state
--   conntui.match  conntui.explain  conntui.kernel.verdict  conntui.kernel.reason  conntui.agrees
--   conntui.summary  conntui.json_frame  conntui.error
--
--   tshark -r x.pcapng -Y 'conntui.match == "none"' -T fields -e conntui.receiver.process
--
-- Bad input never stops the dissection: a comment that is not conntui's is left alone; a
-- reference to a frame this capture does not have, a cut or malformed JSON line, a value
-- of the wrong type show what the summary line says and are marked (conntui.error and an
-- expert info). A reference whose frame is gone (a file cut with editcap, `tshark -2 -R`,
-- which renumbers frames) is resolved by its summary line when another frame carries the
-- JSON under the same summary. Install it with `conntui wireshark install`, or print it with
-- `conntui wireshark plugin`.

local VERSION = "0.1.0"

if set_plugin_info then
    set_plugin_info({
        version = VERSION,
        description = "conntui: the process and socket each packet is delivered to, and why",
    })
end

local PREFIX = "conntui: "
local JSON_PREFIX = "conntui-json: "
local REF_PREFIX = "conntui-json-ref: frame "
local MAX_DEPTH = 64

local proto = Proto("conntui", "conntui attribution")

local F = {
    summary = ProtoField.string("conntui.summary", "Summary"),
    match = ProtoField.string("conntui.match", "Match"),
    explain = ProtoField.string("conntui.explain", "Explanation"),
    kernel_verdict = ProtoField.string("conntui.kernel.verdict", "Kernel's verdict"),
    kernel_reason = ProtoField.string("conntui.kernel.reason", "Kernel's reason"),
    agrees = ProtoField.bool("conntui.agrees", "Kernel agrees with conntui"),
    json_frame = ProtoField.framenum("conntui.json_frame", "Attribution in frame", base.NONE, frametype.NONE),
    error = ProtoField.string("conntui.error", "Error"),
}
local SIDES = { "sender", "receiver" }
for _, side in ipairs(SIDES) do
    local title = side:sub(1, 1):upper() .. side:sub(2)
    F[side] = ProtoField.none("conntui." .. side, title)
    F[side .. ".pid"] = ProtoField.uint32("conntui." .. side .. ".pid", title .. " PID", base.DEC)
    F[side .. ".fd"] = ProtoField.int32("conntui." .. side .. ".fd", title .. " fd", base.DEC)
    F[side .. ".process"] = ProtoField.string("conntui." .. side .. ".process", title .. " process")
    F[side .. ".container"] = ProtoField.string("conntui." .. side .. ".container", title .. " container")
    F[side .. ".state"] = ProtoField.string("conntui." .. side .. ".state", title .. " socket state")
end
local fields = {}
for _, f in pairs(F) do
    fields[#fields + 1] = f
end
proto.fields = fields

local bad_comment = ProtoExpert.new(
    "conntui.bad_comment", "conntui comment incomplete or damaged", expert.group.PROTOCOL, expert.severity.WARN
)
proto.experts = { bad_comment }

local comment_field = Field.new("frame.comment")

-- frame number → what its conntui-json line said (filled as frames are first dissected;
-- references always point back, so a first sequential pass sees the JSON before its refs)
local attributions = {}
-- summary line → the frame of the last JSON line written under it: a reference that cannot
-- be followed by number (a file cut with editcap, `tshark -2 -R`, which renumbers the frames
-- it keeps) is resolved by its summary line, which conntui writes identically for every
-- packet sharing an attribution
local by_summary = {}
-- a reference comment → what it resolved to: the packets of a flow repeat the same comment
-- ("conntui-json-ref: frame N"), and it resolves the same way while frame N's JSON stands
local resolved = {}
local resolved_count = 0

function proto.init()
    attributions = {}
    by_summary = {}
    resolved, resolved_count = {}, 0
end

---------------------------------------------------------------------------------------------
-- JSON (RFC 8259), small and strict: errors are raised as {json = message} and caught.

local function utf8_char(cp)
    if cp < 0x80 then
        return string.char(cp)
    elseif cp < 0x800 then
        return string.char(0xC0 + math.floor(cp / 0x40), 0x80 + cp % 0x40)
    elseif cp < 0x10000 then
        return string.char(0xE0 + math.floor(cp / 0x1000), 0x80 + math.floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
    end
    return string.char(
        0xF0 + math.floor(cp / 0x40000),
        0x80 + math.floor(cp / 0x1000) % 0x40,
        0x80 + math.floor(cp / 0x40) % 0x40,
        0x80 + cp % 0x40
    )
end

local ESCAPES = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }
local NULL = setmetatable({}, { __tostring = function() return "null" end })
local ARRAY = {} -- the metatable of decoded JSON arrays (objects have none)

local function is_object(v)
    return type(v) == "table" and v ~= NULL and getmetatable(v) == nil
end

local function json_decode(s)
    local pos = 1

    local function fail(what)
        error({ json = what .. " at byte " .. pos }, 0)
    end

    local function skip()
        pos = s:find("[^ \t\r\n]", pos) or (#s + 1)
    end

    local function str()
        pos = pos + 1 -- the opening quote
        local parts = {}
        while true do
            local at = s:find('["\\%c]', pos)
            if not at then
                pos = #s + 1
                fail("unterminated string")
            end
            parts[#parts + 1] = s:sub(pos, at - 1)
            local c = s:sub(at, at)
            if c == '"' then
                pos = at + 1
                return table.concat(parts)
            elseif c ~= "\\" then
                pos = at
                fail("control character in a string")
            end
            local e = s:sub(at + 1, at + 1)
            if ESCAPES[e] then
                parts[#parts + 1] = ESCAPES[e]
                pos = at + 2
            elseif e == "u" then
                local hex = s:match("^%x%x%x%x", at + 2)
                if not hex then
                    pos = at
                    fail("bad \\u escape")
                end
                local cp = tonumber(hex, 16)
                pos = at + 6
                if cp >= 0xD800 and cp <= 0xDBFF then
                    local low = s:match("^\\u(%x%x%x%x)", pos)
                    local lo = low and tonumber(low, 16)
                    if lo and lo >= 0xDC00 and lo <= 0xDFFF then
                        cp = 0x10000 + (cp - 0xD800) * 0x400 + (lo - 0xDC00)
                        pos = pos + 6
                    else
                        cp = 0xFFFD -- a lone surrogate (undecodable bytes in a name)
                    end
                elseif cp >= 0xDC00 and cp <= 0xDFFF then
                    cp = 0xFFFD
                end
                parts[#parts + 1] = utf8_char(cp)
            else
                pos = at
                fail("bad escape")
            end
        end
    end

    local value

    local function array(depth)
        pos = pos + 1
        local out = setmetatable({}, ARRAY)
        skip()
        if s:sub(pos, pos) == "]" then
            pos = pos + 1
            return out
        end
        while true do
            out[#out + 1] = value(depth)
            skip()
            local c = s:sub(pos, pos)
            pos = pos + 1
            if c == "]" then
                return out
            elseif c ~= "," then
                pos = pos - 1
                fail("',' or ']' expected")
            end
        end
    end

    local function object(depth)
        pos = pos + 1
        local out = {}
        skip()
        if s:sub(pos, pos) == "}" then
            pos = pos + 1
            return out
        end
        while true do
            skip()
            if s:sub(pos, pos) ~= '"' then
                fail("a key expected")
            end
            local key = str()
            skip()
            if s:sub(pos, pos) ~= ":" then
                fail("':' expected")
            end
            pos = pos + 1
            out[key] = value(depth)
            skip()
            local c = s:sub(pos, pos)
            pos = pos + 1
            if c == "}" then
                return out
            elseif c ~= "," then
                pos = pos - 1
                fail("',' or '}' expected")
            end
        end
    end

    function value(depth)
        if depth > MAX_DEPTH then
            fail("nested too deep")
        end
        skip()
        local c = s:sub(pos, pos)
        if c == "{" then
            return object(depth + 1)
        elseif c == "[" then
            return array(depth + 1)
        elseif c == '"' then
            return str()
        elseif c == "" then
            fail("unexpected end")
        end
        for word, v in pairs({ ["true"] = true, ["false"] = false, null = NULL }) do
            if s:sub(pos, pos + #word - 1) == word then
                pos = pos + #word
                return v
            end
        end
        local num = s:match("^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
        local n = num and tonumber(num)
        if not n then
            fail("unexpected character")
        end
        pos = pos + #num
        return n
    end

    local result = value(0)
    skip()
    if pos <= #s then
        fail("trailing data")
    end
    return result
end

---------------------------------------------------------------------------------------------
-- what a conntui attribution says, from its JSON or, failing that, its summary line

local function text(v)
    if type(v) == "string" then
        return v
    end
    return nil
end

local function int_in(v, lo, hi)
    if type(v) == "number" and v == math.floor(v) and v >= lo and v <= hi then
        return v
    end
    return nil
end

local function container_name(c)
    if type(c) == "string" then
        return c
    elseif is_object(c) then
        return text(c.name) or text(c.id)
    end
    return nil
end

-- {state=, holders={{pid=, fd=, process=, container=}, ...}} or nil; problems are appended
local function socket_of(sock, side, problems)
    if sock == nil or sock == NULL then
        return nil
    end
    if not is_object(sock) then
        problems[#problems + 1] = side .. " is not an object"
        return nil
    end
    local out = { state = text(sock.state), holders = {} }
    local holders = sock.holders
    if holders ~= nil and holders ~= NULL and getmetatable(holders) ~= ARRAY then
        problems[#problems + 1] = side .. ".holders is not a list"
        holders = nil
    end
    for i, h in ipairs(holders or {}) do
        if not is_object(h) then
            problems[#problems + 1] = side .. " holder " .. i .. " is not an object"
        else
            local pid, fd = int_in(h.pid, 0, 4294967295), int_in(h.fd, -2147483648, 2147483647)
            if h.pid ~= nil and pid == nil or h.fd ~= nil and fd == nil then
                problems[#problems + 1] = side .. " holder " .. i .. " has a bad pid or fd"
            end
            out.holders[#out.holders + 1] = {
                pid = pid,
                fd = fd,
                process = text(h.process),
                container = container_name(h.container) or container_name(sock.container),
            }
        end
    end
    if #out.holders == 0 and container_name(sock.container) then
        out.container = container_name(sock.container)
    end
    return out
end

local function from_json(line)
    local ok, d = pcall(json_decode, line)
    if not ok then
        local why = type(d) == "table" and d.json or tostring(d)
        return nil, "the attribution JSON is damaged: " .. why
    end
    if not is_object(d) then
        return nil, "the attribution JSON is not an object"
    end
    local problems = {}
    local att = {
        match = text(d.match),
        explain = text(d.explain),
        sender = socket_of(d.sender, "sender", problems),
        receiver = socket_of(d.receiver, "receiver", problems),
    }
    if att.match == nil then
        problems[#problems + 1] = "no match"
    end
    local kernel = d.kernel
    if is_object(kernel) then
        att.kernel_verdict = text(kernel.verdict)
        att.kernel_reason = text(kernel.reason)
    end
    if type(d.agrees) == "boolean" then
        att.agrees = d.agrees
    end
    return att, (#problems > 0) and ("the attribution JSON: " .. table.concat(problems, "; ")) or nil
end

-- "name[pid] fd N (+k)" / "kernel" / "-" → socket (best effort, for a missing JSON line)
local function side_from_summary(s)
    if s == "-" then
        return nil
    elseif s == "kernel" then
        return { holders = {} }
    end
    local name, pid, fd = s:match("^(.*)%[(%d+)%] fd (%-?%d+)")
    if not name then
        return nil
    end
    return { holders = { { pid = tonumber(pid), fd = tonumber(fd), process = name } } }
end

local function from_summary(summary)
    local sender, receiver, match = summary:match("^" .. PREFIX .. "(.-) → (.-) %(([%l_]+)%)")
    if not sender then
        return nil
    end
    return { match = match, sender = side_from_summary(sender), receiver = side_from_summary(receiver) }
end

-- one comment → {summary=, att=, json_frame=, problem=} or nil when it is not conntui's
local function read_comment_uncached(comment, number)
    local out = {}
    for line in (comment .. "\n"):gmatch("(.-)\r?\n") do
        if line:sub(1, #PREFIX) == PREFIX and not out.summary then
            out.summary = line
        elseif line:sub(1, #JSON_PREFIX) == JSON_PREFIX then
            local att, problem = from_json(line:sub(#JSON_PREFIX + 1))
            out.att, out.problem = att, problem
            if att then
                attributions[number] = { att = att, summary = out.summary }
                if out.summary then
                    by_summary[out.summary] = number
                end
            end
        elseif line:sub(1, #REF_PREFIX) == REF_PREFIX then
            local at = int_in(tonumber(line:sub(#REF_PREFIX + 1)), 1, 4294967295)
            local known = at and attributions[at]
            if not at then
                out.problem = "a reference that names no frame: " .. line
            elseif at >= number then
                out.problem = "the reference names frame " .. at .. ", which does not come before this one"
            elseif not known then
                out.problem = "the attribution is in frame " .. at .. ", which this capture does not have (cut or filtered?)"
            elseif known.summary ~= out.summary then
                out.problem = "frame " .. at .. " carries another attribution (was the capture cut or merged?)"
            else
                out.att, out.json_frame = known.att, at
            end
            local same = out.problem and out.summary and attributions[by_summary[out.summary] or 0]
            if same and same.summary == out.summary then
                out.att, out.problem = same.att, nil -- no json_frame: its number may not be this file's
            end
        end
    end
    if not out.att then
        out.att = from_summary(out.summary or "")
        out.problem = out.problem or "no attribution JSON in the comment"
        if out.att then
            out.problem = out.problem .. "; pid and fd from the summary line"
        end
    end
    return out
end

local function read_comment(comment, number)
    if comment:sub(1, #PREFIX) ~= PREFIX then
        return nil
    end
    local hit = resolved[comment]
    if hit and hit.json_frame < number then
        local known = attributions[hit.json_frame]
        if known and known.att == hit.att then
            return hit
        end
    end
    local out = read_comment_uncached(comment, number)
    if out.json_frame and not out.problem then
        if resolved_count >= 65536 then -- bounded: a long capture of many short flows
            resolved, resolved_count = {}, 0
        end
        if not resolved[comment] then
            resolved_count = resolved_count + 1
        end
        resolved[comment] = out
    end
    return out
end

---------------------------------------------------------------------------------------------
-- the tree

local function add_side(tree, side, sock)
    if not sock then
        return
    end
    local labels = {}
    for _, h in ipairs(sock.holders) do
        labels[#labels + 1] = (h.process or "?") .. "[" .. tostring(h.pid or "?") .. "] fd " .. tostring(h.fd or "?")
    end
    local label = #labels > 0 and table.concat(labels, ", ") or "no process (the kernel)"
    local sub = tree:add(F[side])
    sub:set_text(side:sub(1, 1):upper() .. side:sub(2) .. ": " .. label)
    if sock.state then
        sub:add(F[side .. ".state"], sock.state)
    end
    for _, h in ipairs(sock.holders) do
        if h.pid then
            sub:add(F[side .. ".pid"], h.pid)
        end
        if h.fd then
            sub:add(F[side .. ".fd"], h.fd)
        end
        if h.process then
            sub:add(F[side .. ".process"], h.process)
        end
        if h.container then
            sub:add(F[side .. ".container"], h.container)
        end
    end
    if sock.container then
        sub:add(F[side .. ".container"], sock.container)
    end
end

local function add_comment(tree, info)
    local sub = tree:add(proto)
    if info.summary then
        sub:add(F.summary, info.summary:sub(#PREFIX + 1))
    end
    local att = info.att
    if att then
        if att.match then
            sub:add(F.match, att.match)
        end
        add_side(sub, "sender", att.sender)
        add_side(sub, "receiver", att.receiver)
        if att.explain then
            sub:add(F.explain, att.explain)
        end
        if att.kernel_verdict then
            sub:add(F.kernel_verdict, att.kernel_verdict)
        end
        if att.kernel_reason then
            sub:add(F.kernel_reason, att.kernel_reason)
        end
        if att.agrees ~= nil then
            sub:add(F.agrees, att.agrees)
        end
    end
    if info.json_frame then
        sub:add(F.json_frame, info.json_frame)
    end
    if info.problem then
        sub:add(F.error, info.problem)
        sub:add_proto_expert_info(bad_comment, "conntui: " .. info.problem)
    end
end

function proto.dissector(tvb, pinfo, tree)
    local ok, err = pcall(function()
        for _, fi in ipairs({ comment_field() }) do
            local info = read_comment(tostring(fi.value), pinfo.number)
            if info then
                add_comment(tree, info)
            end
        end
    end)
    if not ok then -- a bug here must not stop the dissection: say so on the packet
        pcall(function()
            local sub = tree:add(proto)
            sub:add(F.error, "the conntui plugin failed on this packet: " .. tostring(err))
        end)
    end
end

register_postdissector(proto)
