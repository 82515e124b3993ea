/*
 * vmdiag UI plugin for the oVirt web admin.
 *
 * Adds a "Diagnostics" detail place to virtual machines and hosts, and a "Diagnostics" primary
 * menu place for the whole fleet. The places show pages served by the vmdiag engine service under
 * config.basePath (default /vmdiag, proxied by the engine's Apache). The user's SSO token is passed
 * in the URL fragment (#token=...), which browsers never send to a server, so it stays out of access
 * logs and Referer headers; the page sends it back as "Authorization: Bearer" on its own requests.
 *
 * Calls used, as exposed by PluginManager.exposePluginApi() in ovirt-engine's webadmin:
 *   pluginApi(name), register(handlers), ready(), configObject(), ssoToken(),
 *   addDetailPlace(entityTypeName, label, historyToken, contentUrl, options),
 *   addPrimaryMenuPlace(label, historyToken, contentUrl, options),
 *   setPlaceContentUrl(historyToken, contentUrl).
 */
(function () {
  "use strict";

  var PLUGIN_NAME = "vmdiag";
  var VM_PLACE = "vmdiag-vm";
  var HOST_PLACE = "vmdiag-host";
  var FLEET_PLACE = "vmdiag-fleet";

  var api = parent.pluginApi(PLUGIN_NAME);
  var config = api.configObject() || {};
  var basePath = String(config.basePath || "/vmdiag").replace(/\/+$/, "");

  function withToken(url) {
    var token = api.ssoToken();
    return token ? url + "#token=" + encodeURIComponent(token) : url;
  }

  // Selection handlers get one argument, the array of selected entities ({id, name, ...});
  // older engines passed the entities as separate arguments, so accept both.
  function selectedItems(args) {
    if (args.length === 1 && Array.isArray(args[0])) {
      return args[0];
    }
    return Array.prototype.slice.call(args);
  }

  function placeUrl(kind, args) {
    var items = selectedItems(args);
    if (items.length === 1 && items[0] && items[0].id) {
      return withToken(basePath + "/ui/" + kind + "s/" + encodeURIComponent(items[0].id));
    }
    // No single selection: a page that asks the user to select one (it needs no token).
    return basePath + "/ui/select/" + kind;
  }

  api.register({
    UiInit: function () {
      api.addDetailPlace("VirtualMachine", "Diagnostics", VM_PLACE,
                         basePath + "/ui/select/vm", { priority: 20 });
      api.addDetailPlace("Host", "Diagnostics", HOST_PLACE,
                         basePath + "/ui/select/host", { priority: 20 });
      api.addPrimaryMenuPlace("Diagnostics", FLEET_PLACE, withToken(basePath + "/ui/fleet"),
                              { priority: 10, icon: "fa-stethoscope", defaultPlace: false });
    },
    VirtualMachineSelectionChange: function () {
      api.setPlaceContentUrl(VM_PLACE, placeUrl("vm", arguments));
    },
    HostSelectionChange: function () {
      api.setPlaceContentUrl(HOST_PLACE, placeUrl("host", arguments));
    }
  });

  api.ready();
})();
