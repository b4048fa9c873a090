package org.peft4j.data;

/** One turn of a chat: {@code role} is "system", "user" or "assistant". */
public record ChatMessage(String role, String content) {}
