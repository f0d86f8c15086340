-- POST /v1/decide with a typical request (~200 bytes); four tenants, two on each of
-- two shards, a thousand sticky users. Used with perf/bench/shardline.toml.
local tenants = {"tenant-0", "tenant-1", "tenant-2", "tenant-3"}
local n = 0
request = function()
  n = n + 1
  local t = tenants[(n % #tenants) + 1]
  local body = '{"request_id":"wrk-' .. n .. '","tenant_id":"' .. t ..
    '","task":{"type":"chat","payload_ref":"s3://bucket/p.json"},"metadata":{"user_id":"u-' .. (n % 1000) .. '"}}'
  return wrk.format("POST", "/v1/decide", {["Content-Type"] = "application/json"}, body)
end
