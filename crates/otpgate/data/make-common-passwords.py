#!/usr/bin/env python3
"""Writes common-passwords.txt: passwords too common to be allowed (NIST SP
800-63B 3.1.1.2: "passwords obtained from previous breach corpuses, dictionary
words, repetitive or sequential characters, context-specific words").

No breach corpus is copied here. The list is built from what is publicly known
about the most used passwords: a hand-written list of the base words that top
every published ranking (and local ones: Nepal, its cities, common names),
keyboard walks and digit runs, and the decorations people add to them (a
capital first letter, trailing digits and years, a trailing "!" or "@123").
Only entries of 8 characters or more are kept (shorter passwords are refused by
length already), in lower case (otpgate compares in lower case), at most
LIMIT of them, most common shapes first.

    python3 crates/otpgate/data/make-common-passwords.py > crates/otpgate/data/common-passwords.txt
"""

import sys

LIMIT = 10_000
MIN_LEN = 8

# The base words of published "most common passwords" rankings, roughly in
# the order they rank, then local words.
WORDS = """
password qwerty iloveyou admin welcome monkey dragon letmein football baseball
master sunshine princess shadow superman michael jennifer trustno1 abc123 hello
freedom whatever qazwsx ninja mustang access batman starwars login passw0rd
charlie donald flower hottie loveme zaq1zaq1 solo jordan harley ranger buster
soccer hockey killer george andrew tigger thomas robert jessica pepper daniel
hunter joshua maggie cheese summer ashley nicole chelsea biteme matthew yankees
computer amanda taylor austin merlin diamond orange ginger william internet
silver secret samsung google facebook apple microsoft linkedin twitter youtube
iphone android windows linux ubuntu oracle cisco default changeme guest test
tester testing demo user root administrator manager office office365 company
business service support server network system security sample example
lovely angel angels babygirl butterfly friends family forever jesus christ
heaven blessed peace purple yellow orange banana chocolate cookie cookies
pokemon naruto minecraft fortnite pubg valorant gaming gamer player
liverpool arsenal manchester barcelona realmadrid chelsea juventus messi
ronaldo cricket tennis golf basketball runner lakers warriors cowboys
eagles tigers lions bears panther panthers wolves falcon phoenix thunder
lightning rainbow unicorn mermaid kitten kitty puppy doggy tiger lion eagle
hello123 welcome1 qwertyuiop asdfghjkl zxcvbnm mypassword newpassword
oldpassword passpass password1 letmein1 iloveu loveyou mylove sweetheart
darling honey sweety babydoll beautiful pretty princesa hermosa
nepal kathmandu pokhara lalitpur bhaktapur biratnagar birgunj butwal dharan
chitwan everest himalaya himalayan namaste namaskar sagarmatha gorkha
mero mero_password maya timilai ramro sathi dai didi bhai baba aama buwa
ram sita krishna shiva ganesh hari laxmi durga kali buddha gautam
sandeep suman sunil anil bikash prakash rajesh ramesh suresh dinesh
santosh sanjay deepak binod bibek roshan sagar saroj manoj kiran pradeep
nabin nirmal kamal bishal bikram rabin ashok sabina sarita sunita anita
gita rita puja pooja sushma asmita anjali priya sapana samjhana
india delhi mumbai bangalore london paris newyork america canada australia
toronto sydney dubai qatar malaysia korea japan china russia germany
jasmine michelle stephanie elizabeth victoria alexander christopher
jonathan benjamin samantha patrick richard charles anthony joseph
""".split()

KEYBOARD = """
qwertyui qwertyuiop qwerty123 qwerty1234 qwerty12345 qwertyuiop123
asdfghjk asdfghjkl asdfasdf asdf1234 zxcvbnm1 zxcvbnm123 qazwsxedc
qazwsxedcrfv 1qaz2wsx 1qaz2wsx3edc 1q2w3e4r 1q2w3e4r5t 1q2w3e4r5t6y
q1w2e3r4 q1w2e3r4t5 zaq12wsx zaq1xsw2 !qaz2wsx 1qazxsw2 qweasdzxc
qweasd123 qwe123qwe abcd1234 abc12345 abcdefgh abcdefghi abcdefghij
a1b2c3d4 a1b2c3d4e5 aa123456 aaaaaaaa asdasdasd qweqweqwe zxczxczxc
poiuytrewq lkjhgfdsa mnbvcxz1 password123 123qweasd 123qweasdzxc
1234qwer 1234asdf 12qwaszx qwer1234 asdf123456 zxcv1234
""".split()

SUFFIXES = (
    ["1", "12", "123", "1234", "12345", "123456", "!", "1!", "123!", "@123",
     "#1", "01", "007", "69", "99", "00", "11", "22", "77", "88", "13", "21",
     "2", "3", "7", "9"]
    + [str(y) for y in range(2026, 1969, -1)]
)


def digit_runs():
    out = []
    for n in range(MIN_LEN, 13):
        out.append("123456789012"[:n])
        out.append("0123456789"[:n] if n <= 10 else "")
        out.append("9876543210"[:n] if n <= 10 else "")
        for d in "0123456789":
            out.append(d * n)
    for pair in ["12", "11", "21", "69", "00", "01", "10", "99", "13"]:
        out.append(pair * 4)
        out.append(pair * 5)
    out += ["11223344", "1122334455", "112233445566", "123123123", "12341234",
            "123321123", "147258369", "159753159", "741852963", "987654321",
            "123454321", "1234554321", "1234512345", "0987654321", "123456123456",
            "147852369", "159357159", "789456123", "456789123", "88888888",
            "52013140", "5201314520", "1314520520", "12344321", "11112222"]
    for year in range(1950, 2027):
        out.append(f"{year}{year}")
        out.append(f"0101{year}")
        out.append(f"1234{year}")
    return [p for p in out if p]


def decorated(word):
    yield word
    yield word + word
    for s in SUFFIXES:
        yield word + s


def main():
    seen = set()
    ordered = []

    def add(p):
        p = p.lower()
        if len(p) >= MIN_LEN and p not in seen and len(ordered) < LIMIT:
            seen.add(p)
            ordered.append(p)

    for p in digit_runs()[:60]:
        add(p)
    for k in KEYBOARD:
        add(k)
    # Round one: the first few decorations of every word, so that each word
    # is represented before any gets its long tail of years.
    for w in WORDS:
        for i, p in enumerate(decorated(w)):
            if i > 8:
                break
            add(p)
    for p in digit_runs():
        add(p)
    for w in WORDS:
        for p in decorated(w):
            add(p)
    for w in WORDS:
        add(w.capitalize() + "@123")
        add(w + "@1234")
        add(w + "_123")
        add(w + ".123")
    sys.stdout.write("\n".join(ordered) + "\n")
    print(f"{len(ordered)} entries", file=sys.stderr)


if __name__ == "__main__":
    main()
