// Preloaded into every Azurite service process that devhost/azurite.py starts (`--require` in NODE_OPTIONS): in a
// process started with --disableTelemetry, `require("applicationinsights")` gives an empty object instead of the
// package. Azurite's answers and behaviour are unchanged; its start costs a third less CPU.
//
// Why: Azurite 3.35.0 loads the Application Insights SDK as its Telemetry module loads, whatever its arguments say
// (node_modules/azurite/dist/src/common/Telemetry.js, last line: `AzuriteTelemetryClient.appInsights =
// require('applicationinsights')`; every service's main.js requires that module). The SDK's own imports
// (diagnostic-channel, which then routes every later `require` through require-in-the-middle, OpenTelemetry,
// @azure/core-rest-pipeline) were a third of each service's start: 1.85 s of CPU for the three services before they
// listen, 1.22 s with this file (measured on this machine, three starts of each); the tests start three services
// for every test module. With --disableTelemetry, which devhost/azurite.py always passes, Azurite never uses the
// object: AzuriteTelemetryClient.init creates its clients and calls `appInsights.start()` only when telemetry is
// enabled ("if (enableTelemetry !== false && ...)"), and each Trace* method first checks that flag and that a client
// was made. A process started without --disableTelemetry loads the real package.
"use strict";

if (process.argv.includes("--disableTelemetry")) {
  const Module = require("module");
  const load = Module._load;
  Module._load = function loadWithoutTelemetry(request, parent, isMain) {
    if (request === "applicationinsights") {
      return {};
    }
    return load.apply(this, arguments);
  };
}
