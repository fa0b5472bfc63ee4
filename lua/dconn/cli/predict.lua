-- dconn predict: batch inference with a model (dconn.model) on safetensors files.
local format, concat = string.format, table.concat
local stdout, stderr, io_open = io.stdout, io.stderr, io.open

local function shape_text(shape) return "[" .. concat(shape, ", ") .. "]" end

local function file_exists(path)
  local f = io_open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

-- The input tensor: IN.safetensors[:TENSOR]; without a name the file must hold one tensor.
local function read_input(model, arg)
  local path, name = arg, nil
  if not file_exists(arg) then
    local p, n = arg:match("^(.*):([^:]*)$")
    if p and p ~= "" and n ~= "" then
      path, name = p, n
    end
  end
  local file, err = model.open(path)
  if not file then return nil, err end
  local names = file:names()
  if not name then
    if #names ~= 1 then
      file:close()
      return nil, format("%s holds %d tensors (%s): name one as %s:TENSOR", path, #names, concat(names, ", "), path)
    end
    name = names[1]
  end
  local t, terr = file:get(name)
  file:close()
  if not t then return nil, format("%s: %s", path, terr) end
  return t
end

local function run(opts)
  local model = require "dconn.model"
  local function fail(msg, code)
    stderr:write("dconn predict: ", tostring(msg), "\n")
    return code or 2
  end
  local m, err = model.load(opts.spec, opts.weights)
  if not m then return fail(err) end
  local x, ierr = read_input(model, opts.input)
  if not x then return fail(ierr) end
  local ok, y, perr = pcall(m.predict, m, x)
  if not ok then -- a shape the model cannot take: say it about the input
    local msg = tostring(y):gsub("^[^:]*:%d+: ", ""):gsub("^bad argument #%d+ to '%w+' %((.*)%)$", "%1")
    return fail(format("input %s: %s", shape_text(x:shape()), msg))
  end
  if not y then return fail(perr, 1) end
  local saved, serr = model.save(opts.output, { output = y }, { producer = "dconn predict", spec = opts.spec })
  if not saved then return fail(serr, 1) end
  stdout:write(format("output %s -> %s\n", shape_text(y:shape()), opts.output))
  return 0
end

return {
  name = "predict",
  summary = "batch inference with a model on safetensors files",
  description = [[
Batch inference: loads the model described by SPEC (a .lua file returning a table, or a .json file;
see examples/cloudedge/lstm_spec.lua) with the state_dict in W (safetensors, F32/F16/BF16/F64), runs
it on the tensor TENSOR of IN ([batch, seq, features], or [batch, features] for models without
recurrent layers; TENSOR may be left out when IN holds one tensor) and writes the result to OUT as
the float32 tensor `output`.]],
  options = {
    { name = "spec", type = "file", metavar = "SPEC", required = true, help = "the model's spec (.lua or .json)" },
    {
      name = "weights",
      type = "file",
      metavar = "W.safetensors",
      required = true,
      help = "the state_dict the spec's layers read",
    },
    {
      name = "input",
      type = "file",
      metavar = "IN.safetensors[:TENSOR]",
      required = true,
      help = "the input tensor, and its name when the file holds several",
    },
    {
      name = "output",
      type = "file",
      metavar = "OUT.safetensors",
      required = true,
      help = "where the result goes (tensor `output`)",
    },
  },
  epilog = [[
Exit status: 0 ok; 2 bad arguments, spec, weights or input (one message on stderr); 1 the output
could not be computed or written.]],
  run = run,
}
