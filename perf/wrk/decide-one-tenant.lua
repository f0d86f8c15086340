-- POST /v1/decide for one tenant (default tenant-2, owned by shard 0 of 2); set TENANT
-- in the environment to change it. Used to compare a shard's own port with a peer's.
local tenant = os.getenv("TENANT") or "tenant-2"
local n = 0
request = function()
  n = n + 1
  local body = '{"request_id":"wrk-' .. n .. '","tenant_id":"' .. tenant ..
    '","task":{"type":"chat","payload_ref":"s3://bucket/p.json"},"metadata":{"user_id":"u-' .. (n % 1000) .. '"}}'
  return wrk.format("POST", "/v1/decide", {["Content-Type"] = "application/json"}, body)
end
