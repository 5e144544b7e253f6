# The image every docker-compose.yml service runs (`docker compose up` starts a demo swarm from it).
# git and ripgrep for the agents' tools, Node.js for the gate's and the reconciler's checks of VoxelCraft,
# bubblewrap for the sandboxes, Chromium for the reconciler's page check (a screenshot of each green main).
FROM python:3.11-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends git ripgrep nodejs npm bubblewrap chromium fonts-dejavu-core \
 && rm -rf /var/lib/apt/lists/*
ENV PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY agentswarm ./agentswarm
RUN pip install --no-cache-dir -e .
COPY . /app
