-- The original cloudedge QoS model (Scanflow data-connector): one per cluster, trained in PyTorch
-- as nn.LSTM(input_size=6, hidden_size=128, num_layers=2, batch_first=True, dropout=0.2), then
-- relu(h_n[-1]) -> Linear(128, 128) -> relu -> Linear(128, 1), on windows of 10 steps of the
-- MinMax-scaled features node_cpu_usage, node_mem_usage, pipelines_server_cpu_usage,
-- pipelines_server_mem_usage, pipelines_status_realtime_pipeline_latency,
-- pipelines_status_idelta_fps. Load its state_dict, saved with safetensors:
--
--   local m = assert(require("dconn.model").load("examples/cloudedge/lstm_spec.lua", "model.safetensors"))
--   local qos = m:predict(windows)   -- windows: [batch, 10, 6] -> [batch, 1]
--
-- (torch: safetensors.torch.save_file(model.state_dict(), "model.safetensors")). To scale inside
-- the model, store the scikit-learn scalers' min_/scale_ in the same file as scaler.x.min,
-- scaler.x.scale, scaler.y.min, scaler.y.scale and use lstm_scaled_spec.lua; or keep them in a
-- JSON file, {"x": {"min_": [...], "scale_": [...]}, "y": {...}} (json.dump of the fitted
-- attributes), and name it: model.load(spec, weights, {scalers = "scalers.json"}), or a spec field
-- scalers = "scalers.json". Without its scalers the network sees raw telemetry and may saturate
-- into a constant: dconn reports constant outputs (dconn.model.diagnose).
return {
  name = "cloudedge-qos-lstm",
  input = { seq = 10, features = 6 },
  layers = {
    {
      type = "LSTM",
      weights = "lstm",
      input_size = 6,
      hidden_size = 128,
      num_layers = 2,
      batch_first = true,
      dropout = 0.2,
      output = "last",
    },
    { type = "ReLU" },
    { type = "Linear", weights = "fc_1", in_features = 128, out_features = 128 },
    { type = "ReLU" },
    { type = "Linear", weights = "fc_2", in_features = 128, out_features = 1 },
  },
}
