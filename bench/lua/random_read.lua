-- wrk script: cached token reads spread uniformly over BENCH_N stored connections
-- (connection ids s-1 .. s-BENCH_N), so store lookups are not all served by one hot row.
local n = tonumber(os.getenv("BENCH_N") or "100")
local pck = os.getenv("BENCH_PCK") or "ninjaone-rmm"
local counter = 0

function setup(thread)
   counter = counter + 1
   thread:set("seed", counter * 7919)
end

function init(args)
   math.randomseed(os.time() + (seed or 0))
end

function request()
   local i = math.random(1, n)
   return wrk.format("GET", "/connections/s-" .. i .. "?provider_config_key=" .. pck)
end
