// The arena page: start a battle, read both answers as they are generated, vote, see the names.
// It calls the page's JSON routes (/arena/battles/...) with the session cookie, and sends the session's CSRF
// token (the page's data-csrf) in the X-CSRF-Token header of every POST. Errors come in the API's one shape;
// their message is shown. Every text from the server (prompts, answers, names) is put in the page as text
// (textContent, append), never as markup.
"use strict";
(() => {
  const root = document.getElementById("arena");
  if (!root) return;
  root.hidden = false;
  const csrf = root.dataset.csrf;
  const $ = (id) => document.getElementById(id);
  const startForm = $("arena-start");
  const promptBox = $("arena-prompt");
  const staticButton = $("arena-static");
  const problemBox = $("arena-problem");
  const battleBox = $("arena-battle");
  const votes = $("arena-votes");
  const voteButtons = [...votes.querySelectorAll("button[data-winner]")];
  const statusLine = $("arena-status");
  const continueForm = $("arena-continue");
  const nextBox = $("arena-next");
  const newButton = $("arena-new");
  const SIDES = ["a", "b"];
  const LABELS = Object.fromEntries(voteButtons.map((b) => [b.dataset.winner, b.textContent]));
  let battle = null;
  let streaming = 0;

  function showProblem(message) {
    problemBox.textContent = message || "";
    problemBox.hidden = !message;
  }

  async function problemOf(response) {
    try {
      const body = await response.json();
      if (body && body.error && body.error.message) return body.error.message;
    } catch {
      // not JSON: say what the server answered
    }
    return `the server answered ${response.status}: reload the page and try again`;
  }

  async function call(method, path, body) {
    const headers = { Accept: "application/json", "X-CSRF-Token": csrf };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
    });
    if (!response.ok) throw new Error(await problemOf(response));
    return response.json();
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function turnBox(side, number) {
    const turns = $(`side-${side}`).querySelector(".turns");
    let box = turns.querySelector(`[data-turn="${number}"]`);
    if (!box) {
      box = el("div", "turn");
      box.dataset.turn = String(number);
      box.append(el("p", "prompt"), el("div", "answer"), el("p", "answer-problem"));
      box.lastChild.hidden = true;
      turns.append(box);
    }
    return box;
  }

  function render() {
    battleBox.hidden = votes.hidden = battle === null;
    newButton.hidden = battle === null || streaming > 0;
    if (battle === null) return;
    for (const side of SIDES) {
      for (const turn of battle.turns) {
        const box = turnBox(side, turn.number);
        box.querySelector(".prompt").textContent = turn.prompt;
        const answer = turn[`answer_${side}`];
        if (answer !== null) box.querySelector(".answer").textContent = answer;
      }
      const name = battle[`model_${side}`];
      $(`name-${side}`).textContent = name ? `· ${name}` : "";
      const column = $(`side-${side}`);
      column.classList.toggle("revealed", Boolean(name));
      const won = battle.winner === `model_${side}`;
      column.classList.toggle("winner", won);
    }
    for (const button of voteButtons) button.disabled = streaming > 0 || !battle.can_vote;
    continueForm.hidden = streaming > 0 || !battle.can_continue;
    if (battle.winner) {
      statusLine.textContent = `You voted: ${LABELS[battle.winner] || battle.winner}. Thank you!`;
    } else if (battle.revealed) {
      statusLine.textContent = "The names are shown: this battle takes no vote.";
    } else if (streaming > 0) {
      statusLine.textContent = "Both models are answering…";
    } else if (battle.can_vote) {
      statusLine.textContent = "Both answers are in: which is better?";
    } else {
      statusLine.textContent = "";
    }
  }

  // One answer as server-sent events: {"delta"} pieces, then {"done"} or {"error"}. True when complete.
  async function stream(side, number) {
    const box = turnBox(side, number);
    const answer = box.querySelector(".answer");
    const problem = box.querySelector(".answer-problem");
    answer.textContent = "";
    problem.hidden = true;
    problem.textContent = "";
    answer.classList.add("streaming");
    let outcome = null;
    try {
      const response = await fetch(`/arena/battles/${battle.id}/answers/${side}`, {
        method: "POST",
        headers: { Accept: "text/event-stream", "X-CSRF-Token": csrf },
        credentials: "same-origin",
      });
      if (!response.ok) throw new Error(await problemOf(response));
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer = (buffer + value).replace(/\r\n?/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = block
            .split("\n")
            .filter((line) => line.startsWith("data:"))
            .map((line) => line.slice(5).replace(/^ /, ""))
            .join("\n");
          if (!data) continue; // a keep-alive comment
          const event = JSON.parse(data);
          if (typeof event.delta === "string") answer.append(event.delta);
          else if (event.done) outcome = { finish: event.finish_reason };
          else if (event.error) outcome = { error: event.error.message };
        }
      }
      if (outcome === null) outcome = { error: "the answer stopped before its end: ask again" };
    } catch (error) {
      outcome = { error: error.message };
    } finally {
      answer.classList.remove("streaming");
    }
    problem.classList.toggle("note", !outcome.error);
    if (outcome.error) {
      problem.textContent = outcome.error + " ";
      const again = el("button", "again", "Ask again");
      again.type = "button";
      again.addEventListener("click", () => answerAll([side]));
      problem.append(again);
      problem.hidden = false;
      return false;
    }
    if (outcome.finish === "length") problem.textContent = "(cut at the arena's token limit)";
    problem.hidden = outcome.finish !== "length";
    return true;
  }

  async function answerAll(sides) {
    const number = battle.turns[battle.turns.length - 1].number;
    streaming += 1;
    render();
    try {
      await Promise.all(sides.map((side) => stream(side, number)));
    } finally {
      streaming -= 1;
    }
    try {
      battle = await call("GET", `/arena/battles/${battle.id}`);
    } catch (error) {
      showProblem(error.message);
    }
    render();
  }

  async function show(view) {
    battle = view;
    history.replaceState(null, "", `#battle-${view.id}`);
    render();
    const latest = view.turns[view.turns.length - 1];
    const missing = SIDES.filter((side) => latest[`answer_${side}`] === null);
    if (missing.length) await answerAll(missing);
  }

  async function busy(elements, work) {
    showProblem("");
    for (const e of elements) if (e) e.disabled = true;
    try {
      await work();
    } catch (error) {
      showProblem(error.message);
    } finally {
      for (const e of elements) if (e) e.disabled = false;
      render();
    }
  }

  function clear() {
    battle = null;
    for (const side of SIDES) $(`side-${side}`).querySelector(".turns").replaceChildren();
    history.replaceState(null, "", location.pathname);
    render();
  }

  const startButtons = startForm ? [...startForm.querySelectorAll("button, textarea")] : [];
  if (startForm) {
    startForm.addEventListener("submit", (event) => {
      event.preventDefault();
      busy(startButtons, async () => {
        clear();
        await show(await call("POST", "/arena/battles", { prompt: promptBox.value, mode: "live" }));
        promptBox.value = "";
      });
    });
  }
  if (staticButton) {
    staticButton.addEventListener("click", () =>
      busy(startButtons, async () => {
        clear();
        await show(await call("POST", "/arena/battles", { mode: "static" }));
      }),
    );
  }
  for (const button of voteButtons) {
    button.addEventListener("click", () =>
      busy(voteButtons, async () => {
        battle = await call("POST", `/arena/battles/${battle.id}/vote`, { winner: button.dataset.winner });
      }),
    );
  }
  continueForm.addEventListener("submit", (event) => {
    event.preventDefault();
    busy([...continueForm.querySelectorAll("button, textarea")], async () => {
      await show(await call("POST", `/arena/battles/${battle.id}/turns`, { prompt: nextBox.value }));
      nextBox.value = "";
    });
  });
  newButton.addEventListener("click", () => {
    showProblem("");
    clear();
    if (promptBox) promptBox.focus();
  });

  // A reloaded page picks its battle up again from the URL (#battle-ID).
  const asked = /^#battle-(\d+)$/.exec(location.hash);
  if (asked) {
    busy(startButtons, async () => {
      try {
        await show(await call("GET", `/arena/battles/${asked[1]}`));
      } catch (error) {
        clear();
        throw error;
      }
    });
  }
})();
