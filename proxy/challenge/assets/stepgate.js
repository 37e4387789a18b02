// stepgate challenge page behaviour: push polling and WebAuthn. The page
// works without it except for security keys, which need the browser API.
(function () {
  "use strict";

  // What needs JavaScript (security keys) is hidden until it runs.
  document.documentElement.classList.add("js");

  // Resend: count the cool-down down in the hint. The button stays usable
  // (the server answers an early press with how long is left).
  var resend = document.getElementById("resend");
  var hint = document.getElementById("resend-hint");
  if (resend && resend.getAttribute("data-wait")) {
    var left = parseInt(resend.getAttribute("data-wait"), 10) || 0;
    var hintText = hint ? hint.textContent : "";
    var tick = function () {
      if (left <= 0) {
        if (hint) { hint.hidden = true; }
        return;
      }
      if (hint) { hint.textContent = hintText.replace(/\d+/, String(left)); }
      left -= 1;
      setTimeout(tick, 1000);
    };
    tick();
  }

  // Push: poll the status endpoint with back-off until PingOne moves on.
  var status = document.getElementById("push-status");
  if (status) {
    var delay = 1000;
    var poll = function () {
      fetch(status.getAttribute("data-poll"), { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (r) {
          // 429 and 503 say when to come back; never ask sooner.
          var wait = parseInt(r.headers.get("Retry-After"), 10);
          if (wait > 0) { delay = Math.max(delay, wait * 1000 / 1.5); }
          return r.json().catch(function () { return {}; });
        })
        .then(function (s) {
          if (s && s.next) { window.location.assign(s.next); return; }
          delay = Math.min(delay * 1.5, 10000);
          setTimeout(poll, delay);
        })
        .catch(function () { delay = Math.min(delay * 2, 15000); setTimeout(poll, delay); });
    };
    setTimeout(poll, delay);
  }

  // WebAuthn: run navigator.credentials.get with the flow's options and post
  // the serialised credential back (PingOne's assertion.check).
  var form = document.getElementById("assertion-form");
  var button = document.getElementById("assertion-button");
  if (form && button) {
    var b64uToBuf = function (s) {
      s = s.replace(/-/g, "+").replace(/_/g, "/");
      while (s.length % 4) { s += "="; }
      var bin = atob(s), out = new Uint8Array(bin.length);
      for (var i = 0; i < bin.length; i++) { out[i] = bin.charCodeAt(i); }
      return out.buffer;
    };
    var toBuf = function (v) {
      if (Array.isArray(v)) { return new Int8Array(v).buffer; }
      return b64uToBuf(String(v));
    };
    var bufToB64u = function (buf) {
      var bytes = new Uint8Array(buf), s = "";
      for (var i = 0; i < bytes.length; i++) { s += String.fromCharCode(bytes[i]); }
      return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
    };
    var run = function () {
      var opts;
      try { opts = JSON.parse(form.getAttribute("data-options")); } catch (e) { opts = null; }
      if (!opts || !window.PublicKeyCredential) {
        // WebAuthn exists only in secure contexts: http on a real host name
        // has no navigator.credentials for keys at all.
        var box = document.getElementById("assertion-error");
        box.textContent = box.getAttribute(window.isSecureContext ? "data-timeout" : "data-origin");
        box.hidden = false;
        return;
      }
      var pk = { challenge: toBuf(opts.challenge), timeout: opts.timeout, rpId: opts.rpId, userVerification: opts.userVerification || "discouraged" };
      if (opts.allowCredentials) {
        pk.allowCredentials = opts.allowCredentials.map(function (c) { return { type: c.type || "public-key", id: toBuf(c.id), transports: c.transports }; });
      }
      button.disabled = true;
      navigator.credentials.get({ publicKey: pk }).then(function (cred) {
        var r = cred.response;
        form.elements.origin.value = window.location.origin;
        form.elements.assertion.value = JSON.stringify({
          id: cred.id, rawId: bufToB64u(cred.rawId), type: cred.type,
          response: {
            clientDataJSON: bufToB64u(r.clientDataJSON),
            authenticatorData: bufToB64u(r.authenticatorData),
            signature: bufToB64u(r.signature),
            userHandle: r.userHandle ? bufToB64u(r.userHandle) : null
          }
        });
        form.submit();
      }).catch(function (e) {
        button.disabled = false;
        var box = document.getElementById("assertion-error");
        // WebAuthn refuses a page whose origin is not secure (https, or
        // localhost) with a SecurityError; anything else is no answer.
        box.textContent = box.getAttribute(e && e.name === "SecurityError" ? "data-origin" : "data-timeout");
        box.hidden = false;
      });
    };
    button.addEventListener("click", run);
  }
})();
