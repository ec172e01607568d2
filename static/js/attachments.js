// Attachments: the composer's Attach button, drag and drop onto the page and pasted images.
// Each file is uploaded at once over plain HTTP (multipart, CSRF token), shown as a chip with a
// progress bar and a Remove button; Send waits until every upload has finished, and the send
// frame carries the ids of the uploaded files. Thumbnails in the transcript open a larger view
// (Esc closes it).
(function () {
  "use strict";

  var pending = []; // {key, file, id, state: "uploading"|"done"|"failed", chip, xhr}
  var sendWhenReady = false;
  var lastSendToken = null;

  function $(id) {
    return document.getElementById(id);
  }

  function csrfToken() {
    var match = document.cookie.match(/(?:^|; )csrftoken=([^;]+)/);
    if (match) return decodeURIComponent(match[1]);
    var input = document.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  function sizeText(size) {
    if (size >= 1024 * 1024) return (size / (1024 * 1024)).toFixed(1) + " MB";
    if (size >= 1024) return Math.round(size / 1024) + " KB";
    return size + " bytes";
  }

  function box() {
    return $("attachments-composer");
  }

  function limit(name) {
    return Number(box().getAttribute("data-" + name)) || 0;
  }

  function showError(text) {
    var error = $("attachment-error");
    if (error) error.textContent = text;
  }

  function syncIds() {
    var ids = pending
      .filter(function (item) {
        return item.state === "done";
      })
      .map(function (item) {
        return item.id;
      });
    $("attachment-ids").value = ids.join(",");
    var uploading = pending.some(function (item) {
      return item.state === "uploading";
    });
    box().classList.toggle("is-uploading", uploading);
    // Files may be sent without words: the text is required only when no file goes along.
    var textarea = $("message");
    if (textarea) {
      textarea.required = !pending.some(function (item) {
        return item.state === "uploading" || item.state === "done";
      });
    }
    var status = $("attachment-status");
    if (status) {
      status.textContent = !uploading ? "" : sendWhenReady ? "Sending once the uploads finish…" : "Uploading…";
    }
    if (!uploading && sendWhenReady) {
      sendWhenReady = false;
      var form = $("composer");
      if (form) form.requestSubmit();
    }
  }

  function removeItem(item) {
    if (item.xhr && item.state === "uploading") item.xhr.abort();
    pending = pending.filter(function (other) {
      return other !== item;
    });
    item.chip.remove();
    syncIds();
  }

  function makeChip(item) {
    var chip = document.createElement("li");
    chip.className = "attachment-chip";
    var name = document.createElement("span");
    name.className = "attachment-chip-name";
    name.textContent = item.file.name || "pasted image";
    var size = document.createElement("span");
    size.className = "attachment-chip-size";
    size.textContent = sizeText(item.file.size);
    var progress = document.createElement("progress");
    progress.max = 100;
    progress.value = 0;
    progress.className = "attachment-progress";
    progress.setAttribute("aria-label", "Uploading " + name.textContent);
    var remove = document.createElement("button");
    remove.type = "button";
    remove.className = "button button--quiet attachment-remove";
    remove.textContent = "Remove";
    remove.setAttribute("aria-label", "Remove " + name.textContent);
    remove.addEventListener("click", function () {
      removeItem(item);
    });
    var message = document.createElement("span");
    message.className = "attachment-chip-error";
    message.setAttribute("role", "alert");
    chip.append(name, size, progress, message, remove);
    return chip;
  }

  function upload(item) {
    var xhr = new XMLHttpRequest();
    item.xhr = xhr;
    var data = new FormData();
    data.append("file", item.file, item.file.name || "pasted-image.png");
    xhr.open("POST", box().getAttribute("data-upload-url"));
    xhr.setRequestHeader("X-CSRFToken", csrfToken());
    xhr.responseType = "json";
    xhr.upload.addEventListener("progress", function (event) {
      if (event.lengthComputable) {
        item.chip.querySelector("progress").value = Math.round((event.loaded / event.total) * 100);
      }
    });
    xhr.addEventListener("load", function () {
      var body = xhr.response || {};
      if (xhr.status === 201 && body.id) {
        item.state = "done";
        item.id = body.id;
        item.chip.setAttribute("data-attachment-id", body.id);
        item.chip.classList.add("is-done");
        item.chip.querySelector("progress").value = 100;
        if (body.kind === "image") {
          var thumb = document.createElement("img");
          thumb.className = "attachment-chip-thumb";
          thumb.alt = "";
          thumb.src = box().getAttribute("data-thumb-url").replace("00000000-0000-0000-0000-000000000000", body.id);
          item.chip.prepend(thumb);
        }
        item.chip.querySelector(".attachment-chip-name").textContent = body.filename;
      } else {
        fail(item, body.error || "The upload failed (" + xhr.status + ").");
      }
      syncIds();
    });
    xhr.addEventListener("error", function () {
      fail(item, "The upload failed: the connection was lost.");
      syncIds();
    });
    xhr.send(data);
  }

  function fail(item, text) {
    item.state = "failed";
    item.chip.classList.add("is-failed");
    item.chip.querySelector(".attachment-chip-error").textContent = text;
    sendWhenReady = false;
  }

  function addFiles(files) {
    if (!box()) return;
    showError("");
    var maxFiles = limit("max-files");
    var maxBytes = limit("max-file-bytes");
    Array.prototype.forEach.call(files, function (file) {
      if (pending.length >= maxFiles) {
        showError("A message can carry at most " + maxFiles + " attachments.");
        return;
      }
      var item = { file: file, id: null, state: "uploading", chip: null, xhr: null };
      item.chip = makeChip(item);
      $("attachment-chips").append(item.chip);
      pending.push(item);
      if (file.size > maxBytes) {
        fail(item, "Larger than the limit of " + sizeText(maxBytes) + " per file.");
        return;
      }
      upload(item);
    });
    syncIds();
  }

  function bindComposer() {
    if (!box()) return;
    var input = $("attach-input");
    $("attach-button").addEventListener("click", function () {
      input.click();
    });
    input.addEventListener("change", function () {
      addFiles(input.files);
      input.value = "";
    });

    // Drop anywhere on the page.
    document.addEventListener("dragover", function (event) {
      if (event.dataTransfer && Array.prototype.indexOf.call(event.dataTransfer.types, "Files") >= 0) {
        event.preventDefault();
        document.body.classList.add("is-dropping");
      }
    });
    document.addEventListener("dragleave", function (event) {
      if (event.relatedTarget === null) document.body.classList.remove("is-dropping");
    });
    document.addEventListener("drop", function (event) {
      document.body.classList.remove("is-dropping");
      if (event.dataTransfer && event.dataTransfer.files.length) {
        event.preventDefault();
        addFiles(event.dataTransfer.files);
      }
    });

    // Pasted images (text pastes are left to the textarea).
    document.addEventListener("paste", function (event) {
      var items = (event.clipboardData && event.clipboardData.items) || [];
      var files = [];
      Array.prototype.forEach.call(items, function (item) {
        if (item.kind === "file") {
          var file = item.getAsFile();
          if (file) files.push(file);
        }
      });
      if (files.length) {
        event.preventDefault();
        addFiles(files);
      }
    });

    document.body.addEventListener("htmx:wsConfigSend", function (event) {
      var params = event.detail.parameters;
      if (params.action !== "send") return;
      var uploading = pending.some(function (item) {
        return item.state === "uploading";
      });
      if (uploading) {
        // Send again by itself once the last upload is in.
        event.preventDefault();
        sendWhenReady = true;
        syncIds();
        return;
      }
      params.attachments = $("attachment-ids").value;
      lastSendToken = params.client_token || null;
    });

    document.body.addEventListener("htmx:wsAfterMessage", function () {
      var ack = $("composer-ack");
      if (lastSendToken && ack && ack.getAttribute("data-token") === lastSendToken) {
        lastSendToken = null;
        pending.forEach(function (item) {
          item.chip.remove();
        });
        pending = [];
        syncIds();
      }
    });
  }

  // Click a thumbnail to see the image larger; Esc or a click closes it.
  function bindLightbox() {
    document.addEventListener("click", function (event) {
      var link = event.target.closest("a[data-lightbox]");
      if (!link) return;
      event.preventDefault();
      var dialog = $("attachment-lightbox");
      if (!dialog) {
        dialog = document.createElement("dialog");
        dialog.id = "attachment-lightbox";
        dialog.className = "attachment-lightbox";
        dialog.setAttribute("aria-label", "Image");
        var image = document.createElement("img");
        var close = document.createElement("button");
        close.type = "button";
        close.className = "button attachment-lightbox-close";
        close.textContent = "Close";
        close.addEventListener("click", function () {
          dialog.close();
        });
        dialog.append(image, close);
        dialog.addEventListener("click", function (clickEvent) {
          if (clickEvent.target === dialog) dialog.close();
        });
        document.body.append(dialog);
      }
      var img = dialog.querySelector("img");
      img.src = link.getAttribute("data-full");
      img.alt = link.getAttribute("title") || "";
      dialog.showModal();
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    bindComposer();
    bindLightbox();
  });
})();
