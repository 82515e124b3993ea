/*
 * Stand-in for ovirt-engine's PluginManager (frontend/webadmin/.../plugin/PluginManager.java):
 * plugin life cycle DEFINED -> LOADING -> READY -> INITIALIZING -> IN_USE (or FAILED when a
 * handler throws), UiInit invoked once after ready(), event handlers invoked with the same
 * argument lists as PluginEventHandler (one array of entity objects), UI actions only allowed
 * while INITIALIZING or IN_USE, ssoToken()/configObject() also while LOADING. Only the API calls
 * that exist in the real engine are defined, so a misspelt call fails the plugin as it would there.
 * Everything the plugin does is recorded in window.harness for the test to assert.
 */
(function () {
  "use strict";
  var ENTITY_TYPES = ["DataCenter", "Cluster", "Host", "Network", "VnicProfile", "Storage", "Disk",
                      "VirtualMachine", "Pool", "Template", "GlusterVolume", "Provider", "User",
                      "Quota", "Errata", "Event"];
  var params = new URLSearchParams(location.search);
  var harness = { calls: [], errors: [], plugins: {}, detailPlaces: [], menuPlaces: [],
                  contentUrls: {}, ready: false };
  window.harness = harness;

  function record(plugin, name, args) {
    harness.calls.push({ plugin: plugin, call: name, args: JSON.parse(JSON.stringify(args)) });
  }
  function canAct(name, allowWhileLoading) {
    var p = harness.plugins[name];
    if (!p) { return false; }
    return p.state === "INITIALIZING" || p.state === "IN_USE" ||
           (allowWhileLoading && p.state === "LOADING");
  }
  function refuse(name, call) {
    harness.errors.push(name + ": " + call + " called while the plugin is " +
                        (harness.plugins[name] ? harness.plugins[name].state : "undefined"));
  }
  function placeFrame(token) {
    var frame = document.getElementById("place-" + token);
    if (!frame) {
      frame = document.createElement("iframe");
      frame.id = "place-" + token;
      frame.width = "900";
      frame.height = "700";
      document.getElementById("places").appendChild(frame);
    }
    return frame;
  }
  function invoke(plugin, fnName, args) {
    var fn = plugin.handlers && plugin.handlers[fnName];
    if (typeof fn !== "function") { return true; }
    try {
      fn.apply(plugin.handlers, args || []);
      return true;
    } catch (e) {
      harness.errors.push(plugin.name + ": " + fnName + " threw " + e);
      plugin.state = "FAILED";
      return false;
    }
  }

  var pluginApi = function (name) { return new pluginApi.fn.init(name); };
  pluginApi.fn = pluginApi.prototype = {
    pluginName: null,
    init: function (name) { this.pluginName = name; return this; },
    register: function (handlers) {
      record(this.pluginName, "register", Object.keys(handlers || {}));
      var p = harness.plugins[this.pluginName];
      if (p && !p.handlers) { p.handlers = handlers || {}; }
    },
    options: function (opts) {
      record(this.pluginName, "options", opts || {});
      harness.plugins[this.pluginName].apiOptions = opts || {};
    },
    ready: function () {
      record(this.pluginName, "ready", []);
      var p = harness.plugins[this.pluginName];
      if (!p || p.state !== "LOADING" || !p.handlers) {
        harness.errors.push(this.pluginName + ": ready() without a registered handler object");
        return;
      }
      p.state = "INITIALIZING";
      if (invoke(p, "UiInit", null)) { p.state = "IN_USE"; }
      harness.ready = true;
    },
    configObject: function () { return harness.plugins[this.pluginName].meta.config; },
    ssoToken: function () {
      if (canAct(this.pluginName, true)) { return params.get("token"); }
      refuse(this.pluginName, "ssoToken");
      return undefined;
    },
    addDetailPlace: function (entityTypeName, label, historyToken, contentUrl, options) {
      record(this.pluginName, "addDetailPlace", [entityTypeName, label, historyToken, contentUrl,
                                                 options || {}]);
      if (!canAct(this.pluginName, false)) { return refuse(this.pluginName, "addDetailPlace"); }
      if (ENTITY_TYPES.indexOf(entityTypeName) < 0) {
        throw new Error("unknown entity type " + entityTypeName);
      }
      harness.detailPlaces.push({ entityType: entityTypeName, label: label,
                                  historyToken: historyToken, contentUrl: contentUrl,
                                  options: options || {} });
      harness.contentUrls[historyToken] = contentUrl;
    },
    addPrimaryMenuPlace: function (label, historyToken, contentUrl, options) {
      record(this.pluginName, "addPrimaryMenuPlace", [label, historyToken, contentUrl,
                                                      options || {}]);
      if (!canAct(this.pluginName, false)) { return refuse(this.pluginName, "addPrimaryMenuPlace"); }
      harness.menuPlaces.push({ label: label, historyToken: historyToken, contentUrl: contentUrl,
                                options: options || {} });
      harness.contentUrls[historyToken] = contentUrl;
    },
    setPlaceContentUrl: function (historyToken, contentUrl) {
      record(this.pluginName, "setPlaceContentUrl", [historyToken, contentUrl]);
      if (!canAct(this.pluginName, false)) { return refuse(this.pluginName, "setPlaceContentUrl"); }
      // The engine applies it deferred (Scheduler.scheduleDeferred), so do the same.
      setTimeout(function () { harness.contentUrls[historyToken] = contentUrl; }, 0);
    }
  };
  pluginApi.fn.init.prototype = pluginApi.fn;
  window.pluginApi = pluginApi;

  // Fire an application event at every plugin in use, as PluginEventHandler does.
  harness.fire = function (eventName, args) {
    Object.keys(harness.plugins).forEach(function (name) {
      var p = harness.plugins[name];
      if (p.state === "IN_USE") { invoke(p, eventName, args); }
    });
  };
  // Show a place's current content URL in an iframe, as revealing the place does.
  harness.reveal = function (historyToken) {
    placeFrame(historyToken).src = harness.contentUrls[historyToken];
  };

  fetch("/harness/plugin-definitions.json").then(function (r) { return r.json(); })
    .then(function (definitions) {
      definitions.forEach(function (meta) {
        if (params.get("basePath")) { meta.config.basePath = params.get("basePath"); }
        var frame = document.createElement("iframe");
        frame.src = meta.url;  // relative to /ovirt-engine/webadmin/, like WebAdmin.html
        frame.width = "0";
        frame.height = "0";
        frame.id = "plugin-" + meta.name;
        harness.plugins[meta.name] = { name: meta.name, meta: meta, state: "LOADING",
                                       handlers: null };
        document.body.appendChild(frame);
      });
    });
})();
