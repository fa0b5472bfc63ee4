-- dconn.export: the original CSV export (the hourly `;`-separated telemetry files of Scanflow's
-- cloudedge deployment) read as the original preprocessing read it: per cluster, one row per 5 s
-- slot with the six model inputs and the QoS. dconn.replay and `dconn telemetry` read through it;
-- features.buckets turns its rows into the 15 s rows a model sees.
--
--   export.read(path) -> data | nil, err
--     path: one export file, or a directory: its *.csv files, ordered by their first timestamp
--     data.clusters          the cluster ids, sorted
--     data.rows[cluster]     { { t =, f = { six numbers in features.NAMES order }, qos = }, ... }, oldest first
--     data.first, data.last  the first and last timestamps kept
--     data.interval          the smallest step between two timestamps (5 s in the original)
--     data.files             the files read, in order
--     data.nrows, data.skipped, data.duplicates: rows read, malformed rows skipped, slots dropped
--                            because an earlier file gave them
--     data.gaps              { { from =, to =, before = file, after = file }, ... }: time missing
--                            between consecutive files
--     data.warnings          one line per problem (malformed rows, gaps), for the caller to log
--   export.parse(text [, name]) -> data | nil, err
--     one export file's contents, read as read reads a file (name, "<string>" by default, stands
--     for its path in data.files and the messages)
--
-- The file: a header row, then per 5 s one row per (timestamp, cluster) with the node cells
-- (node_cpu_usage, node_mem_usage, pipelines_server_cpu_usage, pipelines_server_mem_usage) and
-- one per (timestamp, cluster, pipeline_id) with the pipelines_status_* cells, the other cells
-- empty (tests/fixtures/telemetry-sample.csv). A row with the wrong number of fields or a cell
-- that should be a number and is not is skipped (one warning counts them and names the first).
--
-- The rules, the original preprocessing's (its quirks included, so that a model trained on its
-- output sees the same numbers here):
--   1. A slot is a (timestamp, cluster) within one file. Its pipeline values come from its last
--      row: without a pipeline_id no pipeline ran, and its latency, elapsed time and frame count
--      are 0; with one, a slot whose pipeline cells are not all filled is dropped.
--   2. Its node values come from its first row with a node cell; a slot without one is dropped.
--   3. An empty node cell is interpolated linearly over the cluster's slots of the same file (by
--      position, not by time); after the file's last value of that column the last value is kept;
--      the slots before its first value are dropped.
--   4. Files follow one another; a slot an earlier file already gave is dropped (consecutive
--      hourly files share a timestamp, sometimes more).
--   5. fps is derived per cluster from consecutive slots, across files: the frame count's
--      difference over the elapsed time's (the export's idelta_fps column is not used). The
--      first slot has 0 and so has 0/0 (two slots without a pipeline); other ratios are kept as
--      they are: across a pipeline restart or a slot without pipeline the two differences span
--      the counters' jump (the slot after one without pipeline gets the pipeline's lifetime mean).
--   6. Latency is clipped to [0, 1] s; QoS is computed per slot (features.qos), from that latency
--      and fps.
local features = require "dconn.features"
local errors = require "dconn.error"
local fs = require "dconn.fs"
local access = require "dconn._access"
local timer = require "dconn.timer"

local type, tostring, tonumber, ipairs, pairs = type, tostring, tonumber, ipairs, pairs
local min, huge = math.min, math.huge
local format, find, sub, concat, sort = string.format, string.find, string.sub, table.concat, table.sort

local _M = { _VERSION = "0.1.0" }

-- Failures are dconn.error values (from "export"): kind io (a file or directory that cannot be
-- read) or format (not the export's CSV, or no usable rows).
local function fail(kind, message)
  return nil, errors.new(kind, message, { from = "export" })
end

local NODE = { "node_cpu_usage", "node_mem_usage", "pipelines_server_cpu_usage", "pipelines_server_mem_usage" }
-- the pipeline cells the original requires filled (rule 1); the first three are read
local PIPELINE = {
  "pipelines_status_realtime_pipeline_latency",
  "pipelines_status_elapsed_time",
  "pipelines_status_frame_count",
  "pipelines_status_avg_fps",
  "pipelines_status_avg_pipeline_latency",
  "pipelines_status_count_pipeline_latency",
  "pipelines_status_start_time",
  "pipelines_status_sum_pipeline_latency",
  "pipelines_status_idelta_fps",
}
local REQUIRED =
  { "timestamp", "cluster", "pipeline_id", NODE[1], NODE[2], NODE[3], NODE[4], PIPELINE[1], PIPELINE[2], PIPELINE[3] }
local NUMERIC = { NODE[1], NODE[2], NODE[3], NODE[4], PIPELINE[1], PIPELINE[2], PIPELINE[3] }

local function utc(t)
  return timer.format_time(t, "utc")
end

-- Splits `line` on ';' into `out` (reused); returns the number of fields.
local function split(line, out)
  local n, pos = 0, 1
  while true do
    local s = find(line, ";", pos, true)
    n = n + 1
    if not s then
      out[n] = sub(line, pos)
      return n
    end
    out[n] = sub(line, pos, s - 1)
    pos = s + 1
  end
end

-- The *.csv files directly in dir (links to files included), sorted by name.
local function list_csv(dir)
  local out = {}
  for _, name in ipairs(fs.list(dir, { type = "file" }) or {}) do
    if find(name, "%.csv$") then out[#out + 1] = fs.join(dir, name) end
  end
  return out
end

-- Rule 3 for column i of one cluster's slots: fills the holes in place; the slots before the
-- first value are marked dropped.
local function interpolate(list, i)
  local prev
  for k = 1, #list do
    local v = list[k].node[i]
    if v ~= nil then
      if prev and k > prev + 1 then
        local a = list[prev].node[i]
        for j = prev + 1, k - 1 do
          list[j].node[i] = a + (v - a) * (j - prev) / (k - prev)
        end
      elseif not prev then
        for j = 1, k - 1 do
          list[j].dropped = true
        end
      end
      prev = k
    end
  end
  if not prev then
    for j = 1, #list do
      list[j].dropped = true
    end
    return
  end
  for j = prev + 1, #list do
    list[j].node[i] = list[prev].node[i]
  end
end

-- One file's text: { first =, slots = {cluster = {slot, ...}} (rules 1-3), rows =, bad =, bad_line =,
-- bad_why = }; path names it in messages.
local function parse(text, path)
  if not find(text, "%S") then return fail("format", path .. " is empty") end

  local fields, lineno, pos = {}, 0, 0
  local header_n, col = nil, {}
  local slots, order = {}, {}
  local bad, bad_line, bad_why, nrows = 0, nil, nil, 0
  local first = huge
  for line in text:gmatch("([^\n]*)\n?") do
    lineno = lineno + 1
    if sub(line, -1) == "\r" then line = sub(line, 1, -2) end
    if line ~= "" then
      local n = split(line, fields)
      if not header_n then
        header_n = n
        for i = 1, n do
          col[fields[i]:match("^%s*(.-)%s*$")] = i
        end
        local missing = {}
        for _, name in ipairs(REQUIRED) do
          if not col[name] then missing[#missing + 1] = name end
        end
        if #missing > 0 then
          return fail(
            "format",
            format(
              "%s: the header lacks the column%s %s (line 1: %s)",
              path,
              #missing > 1 and "s" or "",
              concat(missing, ", "),
              #line > 80 and sub(line, 1, 77) .. "..." or line
            )
          )
        end
      else
        local why
        local t = tonumber(fields[col.timestamp])
        local cluster = fields[col.cluster]
        if n ~= header_n then
          why = format("%d fields, the header has %d", n, header_n)
        elseif not t or t ~= t or t == huge or t == -huge then
          why = format("timestamp '%s' is not a number", fields[col.timestamp])
        elseif cluster == "" then
          why = "no cluster"
        end
        local v = {}
        if not why then
          for _, name in ipairs(NUMERIC) do
            local cell = fields[col[name]]
            if cell ~= "" then
              local x = tonumber(cell)
              if not x or x ~= x or x == huge or x == -huge then
                why = format("%s '%s' is not a number", name, cell)
                break
              end
              v[name] = x
            end
          end
        end
        if why then
          bad = bad + 1
          if not bad_line then
            bad_line, bad_why = lineno, why
          end
        else
          nrows, pos = nrows + 1, pos + 1
          if t < first then first = t end
          local key = cluster .. ";" .. tostring(t)
          local slot = slots[key]
          if not slot then
            slot = { t = t, cluster = cluster, key = key }
            slots[key] = slot
            order[#order + 1] = slot
          end
          slot.pos = pos -- the slot's place is its last row's (rule 1)
          if fields[col.pipeline_id] == "" then
            slot.pipe = false
          else
            local full = true
            for _, name in ipairs(PIPELINE) do
              local c = col[name]
              if c and fields[c] == "" then full = false end
            end
            slot.pipe = full and { v[PIPELINE[1]], v[PIPELINE[2]], v[PIPELINE[3]] } or "incomplete"
          end
          if not slot.node and (v[NODE[1]] or v[NODE[2]] or v[NODE[3]] or v[NODE[4]]) then
            slot.node = { v[NODE[1]], v[NODE[2]], v[NODE[3]], v[NODE[4]] }
          end
        end
      end
    end
  end
  if not header_n then return fail("format", path .. " is empty") end

  sort(order, function(a, b) return a.pos < b.pos end)
  local by_cluster = {}
  for _, slot in ipairs(order) do
    if slot.node and slot.pipe ~= "incomplete" then
      local list = by_cluster[slot.cluster]
      if not list then
        list = {}
        by_cluster[slot.cluster] = list
      end
      list[#list + 1] = slot
    end
  end
  for _, list in pairs(by_cluster) do
    for i = 1, #NODE do
      interpolate(list, i)
    end
  end
  return {
    path = path,
    first = first,
    slots = by_cluster,
    rows = nrows,
    bad = bad,
    bad_line = bad_line,
    bad_why = bad_why,
  }
end

-- Rules 4-6 over the parsed files, in order.
local function merge(files)
  local seen, lists, clusters = {}, {}, {}
  local duplicates = 0
  for _, file in ipairs(files) do
    local names = {}
    for cluster in pairs(file.slots) do
      names[#names + 1] = cluster
    end
    sort(names)
    for _, cluster in ipairs(names) do
      local list = lists[cluster]
      if not list then
        list = {}
        lists[cluster] = list
        clusters[#clusters + 1] = cluster
      end
      for _, slot in ipairs(file.slots[cluster]) do
        if not slot.dropped then
          if seen[slot.key] then
            duplicates = duplicates + 1
          else
            seen[slot.key] = true
            list[#list + 1] = slot
          end
        end
      end
    end
  end
  local rows = {}
  local first, last = huge, -huge
  local stamps = {}
  for cluster, list in pairs(lists) do
    local out, frames, elapsed = {}, nil, nil
    for k, slot in ipairs(list) do
      local p = slot.pipe or { 0, 0, 0 }
      local fps = 0
      if frames then
        fps = (p[3] - frames) / (p[2] - elapsed)
        if fps ~= fps then fps = 0 end
      end
      frames, elapsed = p[3], p[2]
      local latency = features.clip_latency(p[1])
      local n = slot.node
      out[k] = { t = slot.t, f = { n[1], n[2], n[3], n[4], latency, fps }, qos = features.qos(fps, latency) }
      if slot.t < first then first = slot.t end
      if slot.t > last then last = slot.t end
      stamps[slot.t] = true
    end
    sort(out, function(a, b) return a.t < b.t end)
    rows[cluster] = out
  end
  sort(clusters)
  local ts = {}
  for t in pairs(stamps) do
    ts[#ts + 1] = t
  end
  sort(ts)
  local dt = huge
  for i = 2, #ts do
    dt = min(dt, ts[i] - ts[i - 1])
  end
  return { clusters = clusters, rows = rows, first = first, last = last, interval = dt, duplicates = duplicates }
end

-- Rules 4-6 and the gaps over the files (paths, each read by load(path)); `path` names them all.
local function assemble(path, paths, load)
  local files, warnings = {}, {}
  local nrows, skipped = 0, 0
  local only
  for _, p in ipairs(paths) do
    local file, err = load(p)
    if not file then return nil, err end
    only = only or file
    if file.bad > 0 then
      warnings[#warnings + 1] = format(
        "%s: skipped %d malformed row%s (first at line %d: %s)",
        p,
        file.bad,
        file.bad > 1 and "s" or "",
        file.bad_line,
        file.bad_why
      )
    end
    nrows, skipped = nrows + file.rows, skipped + file.bad
    if file.rows > 0 then files[#files + 1] = file end
  end
  if nrows == 0 then
    if #paths > 1 then return fail("format", path .. ": no file has rows") end
    if only.bad > 0 then
      return fail(
        "format",
        format(
          "%s has no valid rows (%d malformed, first at line %d: %s)",
          paths[1],
          only.bad,
          only.bad_line,
          only.bad_why
        )
      )
    end
    return fail("format", paths[1] .. " has a header but no rows")
  end
  sort(files, function(a, b)
    if a.first ~= b.first then return a.first < b.first end
    return a.path < b.path
  end)
  local data = merge(files)
  if data.first == huge then return fail("format", path .. ": no slot has both node and pipeline values") end
  if data.interval == huge then data.interval = nil end
  -- gaps between consecutive files: a file starting later than one interval after the previous ended
  local gaps = {}
  local step = data.interval
  if step then
    local prev_last
    for i, file in ipairs(files) do
      local last = -huge
      for _, list in pairs(file.slots) do
        for _, slot in ipairs(list) do
          if slot.t > last then last = slot.t end
        end
      end
      if prev_last and file.first > prev_last + step then
        local gap = { from = prev_last, to = file.first, before = files[i - 1].path, after = file.path }
        gaps[#gaps + 1] = gap
        warnings[#warnings + 1] = format(
          "no data from %s to %s UTC (%g s) between %s and %s",
          utc(gap.from),
          utc(gap.to),
          gap.to - gap.from,
          gap.before,
          gap.after
        )
      end
      prev_last = last > -huge and (prev_last and math.max(prev_last, last) or last) or prev_last
    end
  end
  data.files, data.gaps, data.warnings = {}, gaps, warnings
  for i, file in ipairs(files) do
    data.files[i] = file.path
  end
  data.nrows, data.skipped = nrows, skipped
  return data
end

function _M.read(path)
  if type(path) ~= "string" then error("export.read: expected a path, got " .. type(path), 2) end
  local real, aerr = access.check(path, "r")
  if not real then return fail("io", aerr) end
  path = real
  local paths
  local st, serr = fs.stat(path)
  if not st then return fail("io", format("cannot open %s: %s", path, serr.reason)) end
  if st.type == "dir" then
    paths = list_csv(path)
    if #paths == 0 then return fail("format", path .. " is a directory without .csv files") end
  else
    paths = { path }
  end
  return assemble(path, paths, function(p)
    local text, err = fs.read_file(p)
    if not text then return nil, err end
    return parse(text, p)
  end)
end

function _M.parse(text, name)
  if type(text) ~= "string" then error("export.parse: expected a string, got " .. type(text), 2) end
  if name ~= nil and type(name) ~= "string" then error("export.parse: name must be a string", 2) end
  name = name or "<string>"
  return assemble(name, { name }, function() return parse(text, name) end)
end

return _M
