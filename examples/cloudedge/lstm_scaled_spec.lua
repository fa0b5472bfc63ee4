-- lstm_spec.lua with the per-cluster MinMax scalers inside the model: raw telemetry in, QoS in
-- its own units out. The weights file holds the state_dict plus scaler.x.min, scaler.x.scale
-- (MinMaxScaler.min_, .scale_ fitted on the 6 features) and scaler.y.min, scaler.y.scale (on QoS).
return {
  name = "cloudedge-qos-lstm-scaled",
  input = { seq = 10, features = 6 },
  layers = {
    { type = "MinMax", weights = "scaler.x" },
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
    { type = "MinMax", weights = "scaler.y", inverse = true },
  },
}
