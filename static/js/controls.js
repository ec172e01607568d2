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

  // The numeric parameters as declared, each with this model's range (null: not taken) and its
  // range while thinking (null: not sent while thinking).
  function parameters(profile, sampling) {
    return (profile.parameters || []).filter(function (param) {
      return param.sampling === sampling;
    });
  }

  function parameter(profile, name) {
    return (profile.parameters || []).filter(function (param) {
      return param.name === name;
    })[0];
  }

  function listed(nouns, last) {
    if (nouns.length < 2) return nouns.join("");
    return nouns.slice(0, -1).join(", ") + " " + last + " " + nouns[nouns.length - 1];
  }

  // Which sampling parameter is sent: one segmented choice (default / temperature / top P)
  // offering only what the model takes, and only the chosen parameter's slider shows. The
  // sliders and the choice share one description (#sampling-hint) saying what is sent.
  function samplingMode() {
    var checked = document.querySelector('input[name="sampling"]:checked');
    return checked ? checked.value : "default";
  }

  function samplingHint(profile, mode) {
    var params = parameters(profile, true);
    var nouns = params.map(function (param) { return param.noun; });
    var chosen = parameter(profile, mode);
    if (!chosen) return "Model defaults: neither " + listed(nouns, "nor") + " is sent.";
    var others = listed(nouns.filter(function (noun) { return noun !== chosen.noun; }), "or") + " is not sent.";
    if (!thinking(profile)) return "Sending " + chosen.noun + "; " + others;
    var span = chosen.while_thinking;
    if (!span) return "With reasoning on, " + chosen.noun + " is not sent (thinking uses " + chosen.default + ").";
    return "Sending " + chosen.noun + " (with reasoning on, " + profile.name + " takes " + span.min + " to " + span.max + "); " + others;
  }

  function setSampling(mode) {
    var profile = currentProfile();
    if (!profile) return;
    var chosen = parameter(profile, mode);
    if (mode !== "default" && !(chosen && chosen.sampling && chosen.range)) mode = "default";
    var radio = $("sampling-" + mode);
    if (radio) radio.checked = true;
    document.querySelectorAll("[data-sampling-control]").forEach(function (control) {
      control.hidden = control.getAttribute("data-sampling-control") !== mode;
    });
    // The slider keeps the model's full range: the server says what thinking allows, in words.
    var hint = $("sampling-hint");
    if (!hint) return;
    hint.hidden = Boolean(profile.sampling_reason);
    hint.textContent = hint.hidden ? "" : samplingHint(profile, mode);
  }

  // The choice offers a sampling parameter only when the model takes it, and its slider spans
  // the model's range.
  function applySamplingRange(name, span) {
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

  // Any other parameter: its input shows in the model's range, or hides and goes blank (blank
  // is the model's own default, and nothing the model refuses is kept to be sent).
  function applyRange(param) {
    var input = $(param.name);
    var control = document.querySelector('[data-parameter-control="' + param.name + '"]');
    var span = param.range;
    if (control) control.hidden = !span;
    if (!input) return;
    if (!span) {
      input.value = "";
      return;
    }
    input.min = String(span.min);
    input.max = String(span.max);
    input.placeholder = "default (" + span.default + ")";
    if (input.value !== "") clamp(input, span.min, span.max);
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
    parameters(profile, true).forEach(function (param) {
      applySamplingRange(param.name, param.range);
    });
    parameters(profile, false).forEach(applyRange);
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
    var reasoning = $("reasoning_effort");
    if (!picker) return;
    // Every profile lists the same declared parameters; only their ranges differ.
    var known = profiles();
    var any = currentProfile() || known[Object.keys(known)[0]];
    if (!any) return;
    var sliders = parameters(any, true);
    picker.addEventListener("change", function () {
      applyProfile(currentProfile());
    });
    sliders.forEach(function (param) {
      var input = $(param.name);
      if (input) input.addEventListener("input", function () {
        showValue(param.name);
      });
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
        parameters(currentProfile() || any, true).forEach(function (param) {
          var input = $(param.name);
          if (!input) return;
          input.value = String(param.range ? param.range.default : param.default);
          showValue(param.name);
        });
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
