"""The dashboard (placeholder until the live dashboard lands)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter()


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def index() -> str:
    return "<!doctype html><title>jobyard</title><h1>jobyard</h1>"
