-- Argo CD health of cxop's kinds (Journey, Touchpoint, Survey, CXTarget):
-- one script for all four, installed under each kind's key of argocd-cm
-- (see config/argocd/argocd-cm.yaml). It reads the conditions the manager
-- writes (api/v1alpha1/conditions.go), in this order:
--   Degraded     a CXTarget whose state is Breached, whatever else is true;
--   Progressing  no status yet, or status.observedGeneration behind
--                metadata.generation (the manager has not seen this spec);
--   Degraded     Stalled=True (nothing changes until someone acts: an
--                unusable spec, a missing audience or signing key, an
--                object the API server refuses);
--   Progressing  Reconciling=True (the manager is still working towards
--                Ready: a reference not there yet, a collector starting);
--   Degraded     Ready=False without Reconciling; a Survey's
--                Delivering=False (its invitations wait: webhook gone or
--                signing key missing);
--   Progressing  no Ready condition yet, or Ready=Unknown;
--   Healthy      otherwise.
local hs = {}

local function condition(kind)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function say(c, fallback)
  if c == nil then
    return fallback
  end
  local text = c.reason or ""
  if c.message ~= nil and c.message ~= "" then
    text = text .. ": " .. c.message
  end
  return text
end

local status = obj.status
if obj.kind == "CXTarget" and status ~= nil and status.state == "Breached" then
  hs.status = "Degraded"
  hs.message = say(condition("TargetMet"), "Breached")
  return hs
end

local generation = obj.metadata.generation
if status == nil or status.observedGeneration == nil
    or (generation ~= nil and status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the cxop manager to observe this generation"
  return hs
end

local stalled = condition("Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = say(stalled, "Stalled")
  return hs
end

local reconciling = condition("Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = say(reconciling, "Reconciling")
  return hs
end

local ready = condition("Ready")
if ready ~= nil and ready.status == "False" then
  hs.status = "Degraded"
  hs.message = say(ready, "Not ready")
  return hs
end

local delivering = condition("Delivering")
if delivering ~= nil and delivering.status == "False" then
  hs.status = "Degraded"
  hs.message = say(delivering, "Invitations are not delivered")
  return hs
end

if ready == nil or ready.status ~= "True" then
  hs.status = "Progressing"
  hs.message = say(ready, "Waiting for the Ready condition")
  return hs
end

hs.status = "Healthy"
if obj.kind == "CXTarget" and status.state ~= nil and status.state ~= "" then
  hs.message = say(condition("TargetMet"), status.state)
else
  hs.message = say(ready, "Ready")
end
return hs
