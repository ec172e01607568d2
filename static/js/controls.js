// The controls beside the composer follow the chosen model's profile, rendered into the page
// as JSON (#model-profiles): ranges, which parameters it takes, and why a control is missing.
// The server checks the same profile; this only keeps the page from offering what it refuses.
(function () {
  "use strict";

  function $(id) {
    return document.getElementById(id);
  }

  function profiles() {
    var data = $("model-profiles");
    return data ? JSON.parse(data.textContent) : {};
  }

  function currentProfile() {
    var picker = $("model");
    return picker ? profiles()[picker.value] || null : null;
  }

  function clamp(input, low, high) {
    var value = Number(input.value);
    if (value < low) input.value = String(low);
    if (value > high) input.value = String(high);
  }

  function thinking(profile) {
    var reasoning = $("reasoning_effort");
    return profile && profile.reasoning === "budget" && reasoning && reasoning.value !== "off";
  }

  function showValue(name) {
    var input = $(name);
    var output = $(name + "-value");
    if (input && output) output.textContent = Number(input.value).toFixed(2);
  }

  // Which sampling parameter is sent: one segmented choice (default / temperature / top P)
  // offering only what the model takes, and only the chosen parameter's slider shows. The
  // sliders and the choice share one description (#sampling-hint) saying what is sent.
  function samplingMode() {
    var checked = document.querySelector('input[name="sampling"]:checked');
    return checked ? checked.value : "default";
  }

  function setSampling(mode) {
    var profile = currentProfile();
    if (!profile) return;
    if (mode !== "default" && !profile[mode]) mode = "default";
    var radio = $("sampling-" + mode);
    if (radio) radio.checked = true;
    document.querySelectorAll("[data-sampling-control]").forEach(function (control) {
      control.hidden = control.getAttribute("data-sampling-control") !== mode;
    });
    // The slider keeps the model's full range: the server says what thinking allows, in words.
    var thinks = thinking(profile);
    var span = profile.top_p_while_thinking;
    var hint = $("sampling-hint");
    if (!hint) return;
    hint.hidden = !profile.temperature && !profile.top_p;
    if (hint.hidden) hint.textContent = "";
    else if (mode === "default") hint.textContent = "Model defaults: neither temperature nor Top P is sent.";
    else if (mode === "temperature" && thinks) hint.textContent = "With reasoning on, temperature is not sent (thinking uses 1).";
    else if (mode === "temperature") hint.textContent = "Sending temperature; Top P is not sent.";
    else if (thinks && span) hint.textContent = "Sending Top P (with reasoning on, " + profile.name + " takes " + span.min + " to " + span.max + "); temperature is not sent.";
    else hint.textContent = "Sending Top P; temperature is not sent.";
  }

  // The choice offers a parameter only when the model takes it, and its slider spans the
  // model's range.
  function applyRange(name, span) {
    var option = $("sampling-" + name);
    var label = document.querySelector('label[for="sampling-' + name + '"]');
    var input = $(name);
    if (option) {
      option.hidden = !span;
      option.disabled = !span;
    }
    if (label) label.hidden = !span;
    if (!span || !input) return;
    input.min = String(span.min);
    input.max = String(span.max);
    clamp(input, span.min, span.max);
    showValue(name);
  }

  function setReason(id, text) {
    var note = $(id);
    if (!note) return;
    note.textContent = text;
    note.hidden = !text;
  }

  // A model chosen in the picker: show the controls it takes, in its ranges, and say in words
  // why the others are gone.
  function applyProfile(profile) {
    if (!profile) return;
    applyRange("temperature", profile.temperature);
    applyRange("top_p", profile.top_p);
    setReason("sampling-reason", profile.sampling_reason);
    var choice = document.querySelector("[data-sampling-choice]");
    if (choice) choice.hidden = Boolean(profile.sampling_reason);
    var reset = $("reset-sampling");
    if (reset) reset.hidden = Boolean(profile.sampling_reason);
    var reasoning = $("reasoning_effort");
    var reasoningControl = document.querySelector("[data-reasoning-control]");
    if (reasoningControl) reasoningControl.hidden = Boolean(profile.reasoning_reason);
    if (reasoning && profile.reasoning_reason) reasoning.value = "off";
    setReason("reasoning-reason", profile.reasoning_reason);
    var maxTokens = $("max_tokens");
    if (maxTokens) {
      maxTokens.max = String(profile.max_output_tokens);
      maxTokens.placeholder = "default (" + profile.default_max_tokens + ")";
      // Blank stays blank: it asks for the model's default.
      if (maxTokens.value !== "") clamp(maxTokens, 1, profile.max_output_tokens);
    }
    setSampling(samplingMode());
  }

  function bind() {
    var picker = $("model");
    var temperature = $("temperature");
    var topP = $("top_p");
    var reasoning = $("reasoning_effort");
    if (!picker || !temperature || !topP) return;
    picker.addEventListener("change", function () {
      applyProfile(currentProfile());
    });
    temperature.addEventListener("input", function () {
      showValue("temperature");
    });
    topP.addEventListener("input", function () {
      showValue("top_p");
    });
    document.querySelectorAll('input[name="sampling"]').forEach(function (radio) {
      radio.addEventListener("change", function () {
        setSampling(samplingMode());
      });
    });
    if (reasoning) {
      reasoning.addEventListener("change", function () {
        setSampling(samplingMode());
      });
    }
    var reset = $("reset-sampling");
    if (reset) {
      reset.addEventListener("click", function () {
        var profile = currentProfile();
        temperature.value = String(profile && profile.temperature ? profile.temperature.default : 1);
        topP.value = String(profile && profile.top_p ? profile.top_p.default : 1);
        showValue("temperature");
        showValue("top_p");
        setSampling("default");
      });
    }
    applyProfile(currentProfile());
  }

  // The context meter: the server's count before the next message, plus an estimate of what
  // is being typed (the same reading of the tokeniser as the server's).
  var CHARS_PER_TOKEN = 3.5;

  function shortTokens(tokens) {
    if (tokens >= 1000000) return Number((tokens / 1000000).toPrecision(3)) + "M";
    if (tokens >= 1000) return Math.round(tokens / 1000) + "k";
    return String(tokens);
  }

  function updateMeter() {
    var meter = $("context-meter");
    var label = $("context-meter-label");
    var message = $("message");
    if (!meter || !label) return;
    var typed = message ? Math.ceil(message.value.length / CHARS_PER_TOKEN) : 0;
    var used = Number(meter.getAttribute("data-used")) + typed;
    label.textContent = shortTokens(used) + " of " + shortTokens(Number(meter.getAttribute("data-window")));
  }

  // A reply the gateway refused as too long for the context: offer the two ways on.
  function offerWaysOn() {
    var articles = document.querySelectorAll("#transcript article");
    var last = articles[articles.length - 1];
    var offers = $("context-offers");
    if (!last || !offers || !offers.hidden || !last.querySelector("[data-context-overflow]")) return;
    if (window.htmx) window.htmx.ajax("GET", location.pathname + "context/offers/", { target: "#context-offers", swap: "outerHTML" });
  }

  function bindContext() {
    var message = $("message");
    if (message) message.addEventListener("input", updateMeter);
    var streaming = document.querySelector('#transcript article[data-status="streaming"]') !== null;
    document.body.addEventListener("htmx:wsAfterMessage", function () {
      var now = document.querySelector('#transcript article[data-status="streaming"]') !== null;
      if (streaming && !now) document.body.dispatchEvent(new CustomEvent("chat:turn-done"));
      streaming = now;
      offerWaysOn();
    });
    // A new meter from the server (after a turn, a model change or leaving turns out).
    document.body.addEventListener("htmx:afterSettle", updateMeter);
    document.body.addEventListener("htmx:oobAfterSwap", updateMeter);
    updateMeter();
    offerWaysOn();
  }

  function start() {
    bind();
    bindContext();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
