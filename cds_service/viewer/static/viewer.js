// Heat-map viewer: opacity slider and on/off toggle for the heat layer. No network, no dependencies.
"use strict";
(function () {
  const heat = document.getElementById("heat");
  const slider = document.getElementById("opacity");
  const toggle = document.getElementById("toggle");
  const value = document.getElementById("opacity-value");
  if (!heat || !slider || !toggle) {
    return;
  }
  function apply() {
    const percent = Number(slider.value);
    heat.style.opacity = String(percent / 100);
    heat.classList.toggle("off", !toggle.checked);
    slider.disabled = !toggle.checked;
    if (value) {
      value.textContent = percent + " %";
    }
  }
  slider.addEventListener("input", apply);
  toggle.addEventListener("change", apply);
  apply();
})();
