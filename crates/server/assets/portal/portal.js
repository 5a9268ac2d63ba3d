// Progressive enhancement only: every form works without this script.
// Reads a chosen QR image into the hidden field the scan form submits, so a clinic without
// a camera scanner can upload the resident's code.
"use strict";
document.addEventListener("change", function (event) {
  var input = event.target;
  if (!input || input.type !== "file" || !input.dataset.target) return;
  var target = document.getElementById(input.dataset.target);
  var file = input.files && input.files[0];
  if (!target || !file) return;
  var reader = new FileReader();
  reader.onload = function () { target.value = String(reader.result); };
  reader.readAsDataURL(file);
});
