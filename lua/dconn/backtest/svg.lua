-- dconn.backtest.svg: a backtest (dconn.backtest.score's report) as one SVG picture, written by
-- hand: the realized QoS of each candidate over time (one thin line each, 5-minute means so the
-- picture stays readable), the QoS the app got (a thick dark line), where the app was (a band of
-- the node's colour under the plot), each node's predictions (dots of its colour, at the time
-- they are for), the moves (red markers), the SLA (a dashed line), and the figures in the
-- title. Internal (`dconn backtest --report`).
--
--   svg.render(report) -> text
local timer = require "dconn.timer"

local ipairs, pairs, tostring = ipairs, pairs, tostring
local format, concat = string.format, table.concat
local floor, max, min = math.floor, math.max, math.min

local _M = { _VERSION = "0.1.0" }

local W, H = 1000, 490
local LEFT, RIGHT, TOP, PLOT_H = 60, 300, 56, 360
local BAND_Y, BAND_H = TOP + PLOT_H + 24, 18
local BIN = 300 -- seconds averaged into one point of a line
local COLOURS =
  { "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f", "#d62728" }

local function esc(s)
  return (tostring(s):gsub("&", "&amp;"):gsub("<", "&lt;"):gsub(">", "&gt;"):gsub('"', "&quot;"))
end

local function short(node)
  return node:match("^([^.]+)") or node
end

function _M.render(r)
  local s = r.series
  local plot_w = W - LEFT - RIGHT
  local t0, t1 = r.from, r.to
  local function x(t) return LEFT + (t - t0) / max(1, t1 - t0) * plot_w end
  -- y: the range of what is drawn (and the SLA), padded; 0 to 1 would flatten the lines
  local colour = {}
  for i, node in ipairs(r.candidates) do
    colour[node] = COLOURS[(i - 1) % #COLOURS + 1]
  end

  -- 5-minute means per node, and of what the app got
  local bins = {}
  for i, t in ipairs(s.t) do
    local b = floor((t - t0) / BIN)
    local e = bins[b + 1]
    if not e then
      e = { t = t0 + (b + 0.5) * BIN, n = 0, q = {} }
      bins[b + 1] = e
    end
    e.n = e.n + 1
    for _, node in ipairs(r.candidates) do
      e.q[node] = (e.q[node] or 0) + s[node][i]
    end
    e.q.app = (e.q.app or 0) + s.got[i]
  end
  local lo, hi = r.sla, r.sla
  local list = {}
  for _, e in pairs(bins) do
    list[#list + 1] = e
    for k, v in pairs(e.q) do
      e.q[k] = v / e.n
      lo, hi = min(lo, e.q[k]), max(hi, e.q[k])
    end
  end
  table.sort(list, function(a, b) return a.t < b.t end)
  lo, hi = max(0, floor((lo - 0.02) * 20) / 20), min(1, math.ceil((hi + 0.02) * 20) / 20)
  local function y(q) return TOP + (hi - q) / max(1e-9, hi - lo) * PLOT_H end

  local out = {}
  local function put(...) out[#out + 1] = format(...) end
  put(
    '<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
      .. 'font-family="sans-serif" font-size="12">',
    W,
    H,
    W,
    H
  )
  put('<rect width="%d" height="%d" fill="white"/>', W, H)
  put(
    '<text x="%d" y="20" font-size="15" font-weight="bold">%s: realized QoS %.3f vs %.3f never moving, %.3f '
      .. "original rule, %.3f hindsight best</text>",
    LEFT,
    esc(r.policy),
    r.mean_qos,
    r.stay_qos,
    r.original_qos,
    r.best_qos
  )
  put(
    '<text x="%d" y="40" fill="#444" font-size="11">%s, %s to %s UTC: moves %d (original rule %d), flaps %d, '
      .. "ticks below the SLA %d (never moving %d)</text>",
    LEFT,
    esc(r.target),
    timer.format_time(t0, "utc"),
    timer.format_time(t1, "utc"):sub(12),
    r.moves,
    r.original_moves,
    r.flaps,
    r.sla_violations,
    r.stay_sla_violations
  )
  -- axes and grid
  put('<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#999"/>', LEFT, TOP, plot_w, PLOT_H)
  local step = (hi - lo) > 0.3 and 0.1 or 0.05
  local q = math.ceil(lo / step) * step
  while q <= hi + 1e-9 do
    put('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#eee"/>', LEFT, y(q), LEFT + plot_w, y(q))
    put('<text x="%d" y="%.1f" text-anchor="end">%.2f</text>', LEFT - 6, y(q) + 4, q)
    q = q + step
  end
  local hours = (t1 - t0) / 3600
  local tick = hours > 12 and 7200 or hours > 4 and 3600 or 1800
  local t = math.ceil(t0 / tick) * tick
  while t <= t1 do
    put('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#eee"/>', x(t), TOP, x(t), TOP + PLOT_H)
    put(
      '<text x="%.1f" y="%d" text-anchor="middle">%s</text>',
      x(t),
      TOP + PLOT_H + 15,
      timer.format_time(t, "utc"):sub(12, 16)
    )
    t = t + tick
  end
  put(
    '<text x="14" y="%d" transform="rotate(-90 14 %d)" text-anchor="middle">QoS (5-minute means)</text>',
    TOP + PLOT_H // 2,
    TOP + PLOT_H // 2
  )
  -- one line per candidate
  for _, node in ipairs(r.candidates) do
    local pts = {}
    for _, e in ipairs(list) do
      pts[#pts + 1] = format("%.1f,%.1f", x(e.t), y(e.q[node]))
    end
    put(
      '<polyline class="candidate" data-node="%s" fill="none" stroke="%s" stroke-width="1.3" opacity="0.8" '
        .. 'points="%s"/>',
      esc(node),
      colour[node],
      concat(pts, " ")
    )
  end
  -- what the app got
  local pts = {}
  for _, e in ipairs(list) do
    pts[#pts + 1] = format("%.1f,%.1f", x(e.t), y(e.q.app))
  end
  put(
    '<polyline class="app" fill="none" stroke="black" stroke-width="3" opacity="0.75" points="%s"/>',
    concat(pts, " ")
  )
  -- the SLA
  put(
    '<line class="sla" x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#d62728" stroke-dasharray="6 4"/>',
    LEFT,
    y(r.sla),
    LEFT + plot_w,
    y(r.sla)
  )
  put('<text x="%d" y="%.1f" fill="#d62728" text-anchor="end">SLA %g</text>', LEFT + plot_w - 4, y(r.sla) - 4, r.sla)
  -- where the app was: a band of its node's colour
  put('<text x="%d" y="%d" text-anchor="end">app on</text>', LEFT - 6, BAND_Y + 13)
  local i, n = 1, #s.t
  while i <= n do
    local j = i
    while j < n and s.app[j + 1] == s.app[i] do
      j = j + 1
    end
    local xa, xb = x(s.t[i]), x(j < n and s.t[j + 1] or t1)
    put(
      '<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s"><title>%s</title></rect>',
      xa,
      BAND_Y,
      max(0.5, xb - xa),
      BAND_H,
      colour[s.app[i]],
      esc(s.app[i])
    )
    i = j + 1
  end
  -- the moves
  for _, m in ipairs(r.move_list) do
    local mx = x(m.t)
    put(
      '<line class="move" x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#d62728" stroke-width="1"/>',
      mx,
      TOP,
      mx,
      BAND_Y + BAND_H
    )
    put(
      '<path d="M %.1f %d l -5 -9 l 10 0 z" fill="#d62728"><title>%s -&gt; %s</title></path>',
      mx,
      TOP,
      esc(m.from),
      esc(m.to)
    )
  end
  -- the predictions: a dot per node and pipeline tick (outside the plotted range: left out)
  for _, p in ipairs(s.predicted or {}) do
    if p.t >= t0 and p.t <= t1 then
      for _, node in ipairs(r.candidates) do
        local v = p.values[node]
        if v and v >= lo and v <= hi then
          put(
            '<circle class="prediction" data-node="%s" cx="%.1f" cy="%.1f" r="2.6" fill="%s" stroke="white" '
              .. 'stroke-width="0.6"/>',
            esc(node),
            x(p.t),
            y(v),
            colour[node]
          )
        end
      end
    end
  end
  -- legend
  local lx, ly = LEFT + plot_w + 20, TOP + 8
  for k, node in ipairs(r.candidates) do
    local yy = ly + (k - 1) * 34
    put('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="3"/>', lx, yy, lx + 22, yy, colour[node])
    put('<text x="%d" y="%d">%s%s</text>', lx + 28, yy + 4, esc(short(node)), node == r.start and " (start)" or "")
    put('<text x="%d" y="%d" fill="#555" font-size="11">never moving: %.3f</text>', lx + 28, yy + 18, r.stay[node])
  end
  local yy = ly + #r.candidates * 34
  put('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black" stroke-width="3" opacity="0.75"/>', lx, yy, lx + 22, yy)
  put('<text x="%d" y="%d">what the app got: %.3f</text>', lx + 28, yy + 4, r.mean_qos)
  put('<path d="M %d %d l -5 -9 l 10 0 z" fill="#d62728"/>', lx + 11, yy + 30)
  put('<text x="%d" y="%d">a move (%d), %g s of zero QoS</text>', lx + 28, yy + 26, r.moves, r.move_cost)
  put('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#d62728" stroke-dasharray="6 4"/>', lx, yy + 46, lx + 22, yy + 46)
  put('<text x="%d" y="%d">SLA %g</text>', lx + 28, yy + 50, r.sla)
  if s.predicted and #s.predicted > 0 then
    put('<circle cx="%d" cy="%d" r="3" fill="#555"/>', lx + 11, yy + 66)
    put('<text x="%d" y="%d">a prediction (node\'s colour)</text>', lx + 28, yy + 70)
  end
  put("</svg>")
  return concat(out, "\n") .. "\n"
end

return _M
