/*
 * vmdiag Diagnostics pages: token hand-over, fragment loading and live refresh.
 *
 * The UI plugin opens these pages with the user's oVirt SSO token in the URL fragment
 * (#token=...). Fragments never leave the browser, so the token does not reach server logs or a
 * Referer. This script moves the token into sessionStorage (so in-frame navigation and reloads keep
 * working), removes it from the address bar, and fetches the server-rendered fragment with an
 * Authorization header. The HTML it inserts was escaped by the server; it is parsed through an
 * inert <template>, and the page's Content-Security-Policy forbids inline script in any case.
 */
(function () {
  "use strict";

  var TOKEN_KEY = "vmdiag.ssoToken";
  // The script runs as soon as it is loaded (async, in the head), so the fragment's fetch
  // starts while the stylesheets load and the shell is parsed; what needs the page's elements
  // waits for them (start(), at DOMContentLoaded). Where to fetch is in the head's meta tags.
  function meta(name) {
    var tag = document.querySelector('meta[name="' + name + '"]');
    return tag ? tag.getAttribute("content") : "";
  }
  var fragmentUrl = meta("vmdiag-fragment-url");
  if (!fragmentUrl) {
    return;
  }
  var refreshMs = Math.max(5, parseInt(meta("vmdiag-refresh-s"), 10) || 30) * 1000;
  var root = null, alertBox = null, updated = null, refreshButton = null;
  var query = location.search.replace(/^\?/, "");
  var inFlight = null;
  var loadedOnce = false;
  var readingTimer = null;
  var READING_REFRESH_MS = 1500;
  // Set when the service answers 401 (the SSO token expired or was revoked): the page asks the
  // user to sign in again and stops refreshing until the web admin hands it a new token.
  var signedOut = false;
  var SIGNED_OUT_HTML =
      '<div class="pf-v5-c-empty-state vmdiag-message" data-status="401">' +
      '<div class="pf-v5-c-empty-state__content">' +
      '<h1 class="pf-v5-c-title pf-m-lg">Sign in to oVirt again</h1>' +
      '<div class="pf-v5-c-empty-state__body">Your oVirt session has ended. Sign in to the web ' +
      'admin again; this tab then shows the diagnostics again.</div>' +
      '<div class="pf-v5-c-empty-state__actions"><a class="pf-v5-c-button pf-m-primary ' +
      'vmdiag-sign-in" href="/ovirt-engine/webadmin/" target="_top" rel="noopener">Sign in ' +
      'again</a></div></div></div>';

  function readToken() {
    var match = /(?:^#|&)token=([^&]*)/.exec(location.hash);
    if (match) {
      var token = decodeURIComponent(match[1]);
      try { sessionStorage.setItem(TOKEN_KEY, token); } catch (e) { /* storage disabled */ }
      history.replaceState(history.state, "", location.pathname + location.search);
      return token;
    }
    try { return sessionStorage.getItem(TOKEN_KEY); } catch (e) { return null; }
  }

  var token = readToken();

  function setAlert(text) {
    alertBox.textContent = "";
    if (!text) { return; }
    var div = document.createElement("div");
    div.className = "pf-v5-c-alert pf-m-inline pf-m-warning pf-m-plain";
    var p = document.createElement("p");
    p.className = "pf-v5-c-alert__title";
    p.textContent = text;
    div.appendChild(p);
    alertBox.appendChild(div);
  }

  function localiseTimes(scope) {
    var nodes = scope.querySelectorAll("time[data-vmdiag-local]");
    for (var i = 0; i < nodes.length; i++) {
      var when = new Date(nodes[i].getAttribute("datetime"));
      if (!isNaN(when.getTime())) {
        nodes[i].title = nodes[i].textContent;
        nodes[i].textContent = when.toLocaleString(undefined, {
          year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit"
        });
      }
    }
  }

  function swap(html) {
    // Keep focus and a text field's caret across a refresh, so keyboard users are not thrown out.
    var active = document.activeElement;
    var focusId = active && root.contains(active) && active.id ? active.id : null;
    var caret = focusId && typeof active.selectionStart === "number" ? active.selectionStart : null;
    var template = document.createElement("template");
    template.innerHTML = html;
    localiseTimes(template.content);
    root.replaceChildren(template.content);
    root.setAttribute("aria-busy", "false");
    if (focusId) {
      var again = document.getElementById(focusId);
      if (again) {
        again.focus();
        if (caret !== null && typeof again.setSelectionRange === "function") {
          try { again.setSelectionRange(caret, caret); } catch (e) { /* not a text field */ }
        }
      }
    }
  }

  // One fetch of the fragment (the one before it, if still running, is aborted).
  function request() {
    if (inFlight) { inFlight.abort(); }
    var controller = new AbortController();
    inFlight = controller;
    var url = fragmentUrl + (query ? "?" + query : "");
    var answer = fetch(url, {
      headers: { "Authorization": "Bearer " + token, "Accept": "text/html" },
      cache: "no-store",
      credentials: "same-origin",
      referrerPolicy: "no-referrer",
      signal: controller.signal
    }).then(function (response) {
      return response.text().then(function (text) {
        return { response: response, text: text };
      });
    });
    answer.catch(function () { /* handled by load() */ });
    return { controller: controller, answer: answer };
  }

  function load() {
    if (!token) {
      root.setAttribute("aria-busy", "false");
      swap('<div class="pf-v5-c-empty-state"><div class="pf-v5-c-empty-state__content">' +
           '<h1 class="pf-v5-c-title pf-m-lg">Open Diagnostics from the oVirt web admin</h1>' +
           '<div class="pf-v5-c-empty-state__body">This page needs your oVirt session, which ' +
           'the web admin passes to it. Select a virtual machine or host there and open its ' +
           'Diagnostics tab.</div></div></div>');
      return Promise.resolve();
    }
    var req = early || request();
    early = null;
    var controller = req.controller;
    return req.answer.then(function (answer) {
      var response = answer.response;
      return (function (text) {
        if (response.status === 401) {
          // Our own 401 fragment, or (from a proxy, say) anything else: the same request.
          var ours = /^text\/html/.test(response.headers.get("Content-Type") || "") &&
              text.indexOf('data-status="401"') >= 0;
          signedOut = true;
          swap(ours ? text : SIGNED_OUT_HTML);
          setAlert("");
          updated.textContent = "";
          refreshButton.hidden = true;
          document.dispatchEvent(new CustomEvent("vmdiag:loaded", { detail: 401 }));
          return;
        }
        if (response.ok || response.status === 403 || response.status === 404) {
          swap(text);
          // The user's list is still being read from oVirt: show the rest within seconds.
          clearTimeout(readingTimer);
          if (root.querySelector("[data-vmdiag-reading]")) {
            readingTimer = setTimeout(function () {
              if (!document.hidden && !signedOut) { load(); }
            }, READING_REFRESH_MS);
          }
          loadedOnce = true;
          setAlert("");
          updated.textContent = "Updated " + new Date().toLocaleTimeString();
          refreshButton.hidden = false;
          document.dispatchEvent(new CustomEvent("vmdiag:loaded", { detail: response.status }));
        } else {
          throw new Error("the vmdiag service answered " + response.status);
        }
      })(answer.text);
    }).catch(function (err) {
      if (err && err.name === "AbortError") { return; }
      setAlert((loadedOnce ? "Could not refresh: " : "Could not load diagnostics: ") +
               (err && err.message ? err.message : "network error") +
               ". Retrying in " + refreshMs / 1000 + " s.");
      root.setAttribute("aria-busy", "false");
    }).then(function () {
      if (inFlight === controller) { inFlight = null; }
    });
  }

  function setQuery(params) {
    query = params.toString();
    history.replaceState(history.state, "", location.pathname + (query ? "?" + query : ""));
    return load();
  }

  function formParams(form) {
    var params = new URLSearchParams();
    var data = new FormData(form);
    data.forEach(function (value, key) {
      if (value !== "") { params.set(key, value); }
    });
    return params;
  }

  function start() {
    root = document.getElementById("vmdiag-root");
    alertBox = document.getElementById("vmdiag-alert");
    updated = document.getElementById("vmdiag-updated");
    refreshButton = document.getElementById("vmdiag-refresh");
    if (!root) { return; }
    // Event delegation: the fragment is replaced on every refresh, the listeners stay on the root.
    root.addEventListener("submit", function (event) {
      event.preventDefault();
      setQuery(formParams(event.target));
    });
    root.addEventListener("change", function (event) {
      var target = event.target;
      if (target.hasAttribute("data-per-page")) {
        var sized = new URLSearchParams(query);
        sized.set("per_page", target.value);
        sized.delete("page");
        setQuery(sized);
      } else if (target.hasAttribute("data-page-input")) {
        var pager = target.closest("[data-pages]");
        var last = parseInt(pager && pager.getAttribute("data-pages"), 10) || 1;
        var wanted = Math.min(Math.max(parseInt(target.value, 10) || 1, 1), last);
        goToPage(wanted);
      } else if (target.tagName === "SELECT" && target.form) {
        setQuery(formParams(target.form));
      }
    });

    // The export needs the Authorization header, so it is fetched here and handed to the browser
    // as a download of the response's own bytes (never parsed or inserted into the page).
    function exportCsv(button) {
      button.disabled = true;
      fetch(button.getAttribute("data-export-url"), {
        headers: { "Authorization": "Bearer " + token, "Accept": "text/csv" },
        cache: "no-store", credentials: "same-origin", referrerPolicy: "no-referrer"
      }).then(function (response) {
        if (!response.ok) { throw new Error("the vmdiag service answered " + response.status); }
        var disposition = response.headers.get("Content-Disposition") || "";
        var name = /filename="([^"]+)"/.exec(disposition);
        return response.blob().then(function (blob) {
          var link = document.createElement("a");
          link.href = URL.createObjectURL(blob);
          link.download = name ? name[1] : "vmdiag-fleet.csv";
          document.body.appendChild(link);
          link.click();
          link.remove();
          setTimeout(function () { URL.revokeObjectURL(link.href); }, 10000);
          document.dispatchEvent(new CustomEvent("vmdiag:exported", { detail: link.download }));
        });
      }).catch(function (err) {
        setAlert("Could not export: " + (err && err.message ? err.message : "network error"));
      }).then(function () { button.disabled = false; });
    }

    function goToPage(page) {
      var paged = new URLSearchParams(query);
      if (page > 1) { paged.set("page", String(page)); } else { paged.delete("page"); }
      setQuery(paged);
    }
    var typing = null;
    root.addEventListener("input", function (event) {
      if (event.target.type === "search" && event.target.form) {
        clearTimeout(typing);
        var form = event.target.form;
        typing = setTimeout(function () { setQuery(formParams(form)); }, 300);
      }
    });
    root.addEventListener("click", function (event) {
      var pageButton = event.target.closest("[data-page]");
      if (pageButton && !pageButton.disabled) {
        goToPage(parseInt(pageButton.getAttribute("data-page"), 10) || 1);
        return;
      }
      var sort = event.target.closest("[data-sort]");
      if (sort) {
        var params = new URLSearchParams(query);
        params.set("sort", sort.getAttribute("data-sort"));
        params.set("dir", sort.getAttribute("data-dir"));
        params.delete("page");
        setQuery(params);
        return;
      }
      var health = event.target.closest("[data-health-filter]");
      if (health) {
        var withHealth = new URLSearchParams(query);
        if (health.getAttribute("data-health-filter")) {
          withHealth.set("health", health.getAttribute("data-health-filter"));
        } else {
          withHealth.delete("health");
        }
        withHealth.delete("page");
        setQuery(withHealth);
        return;
      }
      var exportButton = event.target.closest("[data-export-url]");
      if (exportButton) {
        exportCsv(exportButton);
        return;
      }
      if (event.target.closest("[data-clear-filters]")) {
        setQuery(new URLSearchParams());
      }
    });
    refreshButton.addEventListener("click", function () { load(); });
    // A new token for the same page arrives as a fragment-only navigation, which does not reload.
    window.addEventListener("hashchange", function () {
      if (/(?:^#|&)token=/.test(location.hash)) {
        token = readToken();
        signedOut = false;
        load();
      }
    });

    setInterval(function () {
      if (!document.hidden && !signedOut) { load(); }
    }, refreshMs);
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden && loadedOnce && !signedOut) { load(); }
    });
    window.vmdiagRefresh = load;
    load();
  }

  var early = token ? request() : null;
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
