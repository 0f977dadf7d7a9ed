# Writes one file as a C byte array: -DIN=file -DOUT=out.c -DNAME=symbol
file(READ ${IN} hex HEX)
file(SIZE ${IN} size)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," hex "${hex}")
string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)" "\\1\n" hex "${hex}")
file(WRITE ${OUT} "/* generated from ${IN}; do not edit */\n#include <stddef.h>\n"
  "const unsigned char ${NAME}[] = {\n${hex}0x00};\nconst size_t ${NAME}_len = ${size};\n")
