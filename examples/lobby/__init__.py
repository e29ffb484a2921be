"""Game lobbies, matchmaking and ticking matches, as a triohub application.

    .venv/bin/hub serve examples.lobby.app:app     # then open http://127.0.0.1:8000/lobby/
    .venv/bin/python -m examples.lobby.bot --bots 6  # bots that queue and play

- `lobby.py`: `lobby:<id>` topics, a host's room with a capacity and
  settings, ready states, a ready check with a timeout, kicks;
- `matchmaking.py`: `queue:<mode>` topics, players queued alone or as a
  party, matched by size and a rating band that widens as they wait;
- `match.py`: `match:<id>` topics, one actor per match ticking at a fixed
  rate, a slot per player held through a disconnect for a grace period;
- `game.py`: the game itself (coin grab), pure: state in, state out;
- `bot.py`: a headless player on `hub.client`, to play and to load it.

See docs/lobby.md.
"""
